#!/usr/bin/env bash
# Property-based fuzzing of the whole HTTP API from its own /openapi.json with
# schemathesis: every generated request must get an answer that is not a 5xx.
# Usage: scripts/api-fuzz.sh [max-examples]   (needs: pip install schemathesis)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-80}"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build -q -p keyward
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/keyward serve --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q 'root key:' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
root=$(awk '/root key:/ {print $3}' "$work/serve.log")
st run "http://127.0.0.1:$port/openapi.json" -H "Authorization: Bearer $root" \
  --checks not_a_server_error --max-examples "$examples" --workers 2 || status=$?
if grep -qiE 'panic' "$work/serve.log"; then echo "server panicked"; exit 1; fi
exit "${status:-0}"
