#!/usr/bin/env bash
# The test command: installs the MCP servers the tests use, starts a throwaway PostgreSQL cluster
# (the storage contract suite and the persistence end-to-end tests run on it as well as on SQLite),
# runs every test, and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
eval "$(bash scripts/test-postgres.sh start)"
trap 'bash scripts/test-postgres.sh stop "$AICHAT_TEST_POSTGRES_DIR"' EXIT
cargo test --workspace "$@"
