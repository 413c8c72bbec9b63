#!/usr/bin/env bash
# The test command: installs the MCP servers the tests use, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
cargo test --workspace "$@"
