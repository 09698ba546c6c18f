#!/usr/bin/env bash
# Gateway overhead: the same upstream (a one-worker nginx answering "ok") behind
#   (a) `keyward gateway`, every request's key verified (warm cache, usage events on),
#   (b) a plain reverse proxy: nginx, one worker, proxy_pass with upstream keep-alive,
#   (c) `keyward gateway --benchmark-without-checks` (the proxy alone, for reference),
# under the same wrk load. The proxy under test is pinned to core $PROXY_CPU (one tokio
# worker / one nginx worker); wrk and the upstream share core $LOAD_CPU.
# Prints each throughput, p50/p99 and the ratio gateway/nginx (target >= 0.85).
#
#   bench/gateway.sh                 # DURATION=15 CONNS=32
#   DURATION=5 bench/gateway.sh
#   KEYWARD_BIN=../before/target/release/keyward bench/gateway.sh   # another build (A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx is needed: apt-get install nginx" >&2; exit 2; }
if [ -z "${KEYWARD_BIN:-}" ]; then
  cargo build --release -q -p keyward
  KEYWARD_BIN=target/release/keyward
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
# One nginx in the foreground, one worker, everything under $work/$1.
start_nginx() {
  local name=$1 cpu=$2 server_block=$3
  mkdir -p "$work/$name/logs" "$work/$name/tmp"
  cat > "$work/$name/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $work/$name/nginx.pid;
error_log $work/$name/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name/tmp/body;
  proxy_temp_path $work/$name/tmp/proxy;
  fastcgi_temp_path $work/$name/tmp/fastcgi;
  uwsgi_temp_path $work/$name/tmp/uwsgi;
  scgi_temp_path $work/$name/tmp/scgi;
  $server_block
}
CONF
  taskset -c "$cpu" nginx -p "$work/$name" -c "$work/$name/nginx.conf" &
  pids+=($!)
}

up_port=$(free_port); nginx_port=$(free_port); gw_port=$(free_port); api_port=$(free_port); bare_port=$(free_port)
start_nginx upstream "$LOAD_CPU" "server { listen 127.0.0.1:$up_port; location / { return 200 \"ok\\n\"; } }"
start_nginx proxy "$PROXY_CPU" "upstream backend { server 127.0.0.1:$up_port; keepalive 64; }
  server { listen 127.0.0.1:$nginx_port; location / {
    proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_buffering off; } }"
wait_http "http://127.0.0.1:$up_port/"
wait_http "http://127.0.0.1:$nginx_port/"

TOKIO_WORKER_THREADS=1 KEYWARD_LOG=warn taskset -c "$PROXY_CPU" "$KEYWARD_BIN" gateway \
  --listen "127.0.0.1:$gw_port" --api-listen "127.0.0.1:$api_port" --data-dir "$work/data" \
  --upstream "http://127.0.0.1:$up_port" --require-scope bench:call \
  --route 'POST /orders=orders:write' 2>"$work/gateway.log" &
pids+=($!)
wait_http "http://127.0.0.1:$api_port/healthz"
root=$(awk '/root key:/ {print $3}' "$work/gateway.log")
api() { curl -sf -H "Authorization: Bearer $root" -H 'content-type: application/json' "$@"; }
identity=$(api "http://127.0.0.1:$api_port/v1/identities" -d '{"name":"gw-bench","owner":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
key=$(api "http://127.0.0.1:$api_port/v1/keys" -d "{\"identity_id\":\"$identity\",\"scopes\":[\"bench:call\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
# Sanity: the gateway lets the key through and refuses no key.
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$gw_port/")" = 200 ] || { echo "gateway sanity check failed" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gw_port/")" = 401 ] || { echo "gateway let a request without a key through" >&2; exit 1; }

TOKIO_WORKER_THREADS=1 KEYWARD_LOG=warn taskset -c "$PROXY_CPU" "$KEYWARD_BIN" gateway \
  --listen "127.0.0.1:$bare_port" --data-dir "$work/data-bare" \
  --upstream "http://127.0.0.1:$up_port" --benchmark-without-checks 2>"$work/bare.log" &
pids+=($!)
wait_http "http://127.0.0.1:$bare_port/"

pct() { awk -v p="$1%" '$1==p { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 }; printf "%.3f", v }' "$2"; }
rps() { awk '/^Requests\/sec/ {print $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {n=$5} END {print n+0}' "$1"; }
measure() {
  local name=$1 url=$2
  echo "== $name: $url"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d3s -H "Authorization: Bearer $key" "$url" > /dev/null
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $key" "$url" > "$work/$name.txt"
  echo "   $(rps "$work/$name.txt") req/s, p50 $(pct 50 "$work/$name.txt") ms, p99 $(pct 99 "$work/$name.txt") ms, non-2xx $(non2xx "$work/$name.txt")"
}
measure nginx "http://127.0.0.1:$nginx_port/orders/7?x=1"
measure gateway "http://127.0.0.1:$gw_port/orders/7?x=1"
measure bare "http://127.0.0.1:$bare_port/orders/7?x=1"

n=$(rps "$work/nginx.txt"); g=$(rps "$work/gateway.txt"); b=$(rps "$work/bare.txt")
valid=$(curl -s "http://127.0.0.1:$api_port/metrics" | grep -F 'keyward_verify_total{code="VALID"}' | awk '{print $2}')
echo
printf 'RESULT gateway nginx_rps=%s gateway_rps=%s bare_gateway_rps=%s ratio_gateway_nginx=%.3f ratio_gateway_bare=%.3f gateway_p50_ms=%s gateway_p99_ms=%s nginx_p50_ms=%s nginx_p99_ms=%s gateway_non2xx=%s verified_valid=%s\n' \
  "$n" "$g" "$b" "$(python3 -c "print($g/$n)")" "$(python3 -c "print($g/$b)")" \
  "$(pct 50 "$work/gateway.txt")" "$(pct 99 "$work/gateway.txt")" "$(pct 50 "$work/nginx.txt")" "$(pct 99 "$work/nginx.txt")" \
  "$(non2xx "$work/gateway.txt")" "$valid"
