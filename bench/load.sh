#!/usr/bin/env bash
# Load benchmark over HTTP: starts Keyward (release build, embedded store) pinned to core 0,
# mints $KEYS keys through the API (measuring keys/s), then measures with wrk pinned to
# core 1, in one run: the floor (GET /healthz) and POST /v1/verify over all the keys, in
# $PAIRS alternating pairs of phases (default 3). Prints each pair, then the medians: the
# verify/healthz throughput ratio, p50 and p99; then the same for batches of
# $BATCH verifications per request (POST /v1/verify/batch), counted in verifications.
#
#   bench/load.sh                      # KEYS=20000 DURATION=15 CONNS=32
#   KEYS=5000 DURATION=6 PAIRS=2 bench/load.sh
#   BATCH=0 bench/load.sh              # without the POST /v1/verify/batch phase (BATCH=20)
#   KEYWARD_BIN=../before/target/release/keyward bench/load.sh   # another build (A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-20000}
DURATION=${DURATION:-15}
CONNS=${CONNS:-32}
BATCH=${BATCH:-20}
# A batch takes ~100 µs to answer: 8 connections keep the server busy without queueing
# 32 batches deep (which would only add latency).
BATCH_CONNS=${BATCH_CONNS:-8}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
if [ -z "${KEYWARD_BIN:-}" ]; then
  cargo build --release -q -p keyward
  KEYWARD_BIN=target/release/keyward
fi
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
# One core for the server: its runtime gets one worker thread to match.
# USAGE=off turns usage recording off, DETECTION=off anomaly detection (bench/usage-cost.sh
# measures what each costs).
[ "${USAGE:-on}" = off ] && export KEYWARD_BENCH_USAGE_RECORDING=off
[ "${DETECTION:-on}" = off ] && export KEYWARD_ANOMALY_DETECTION=off
TOKIO_WORKER_THREADS=1 KEYWARD_LOG=warn taskset -c "$SERVER_CPU" \
  "$KEYWARD_BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/serve.log" &
server=$!
for _ in $(seq 200); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.05; done
root=$(awk '/root key:/ {print $3}' "$work/serve.log")
api() { curl -sf -H "Authorization: Bearer $root" -H 'content-type: application/json' "$@"; }
identity=$(api "$base/v1/identities" -d '{"name":"load","owner":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
verifier=$(api "$base/v1/keys" -d "{\"identity_id\":\"$identity\",\"scopes\":[\"keyward:verify\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

run_wrk() { taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" --latency "$@"; }
# CPU seconds (user+system) a process has used so far.
cpu_secs() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
# Runs wrk and reports how busy the server and wrk itself were: a load generator at
# 100% would make the comparison about wrk, not the server.
measure() {
  local out=$1; shift
  local s0; s0=$(cpu_secs "$server")
  /usr/bin/time -f "%U %S" -o "$out.wrkcpu" bash -c 'taskset -c "$0" wrk -t1 -c"$1" --latency "${@:2}"' "$LOAD_CPU" "$CONNS" "$@" > "$out"
  local s1; s1=$(cpu_secs "$server")
  python3 - "$out" "$s0" "$s1" "${MEASURE_SECS:-$DURATION}" <<'PY'
import sys
out, s0, s1, d = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
u, s = map(float, open(out + ".wrkcpu").read().split()[-2:])
reqs = next(float(l.split()[0]) for l in open(out) if "requests in" in l)
cpu_us = 1e6 * (s1 - s0) / reqs
open(out + ".cpu_us", "w").write(f"{cpu_us:.1f}")
print(f"   server CPU {100*(s1-s0)/d:.0f}%, wrk CPU {100*(u+s)/d:.0f}%, server CPU per request {cpu_us:.1f} µs")
PY
}
# wrk's latency lines ("50%  1.23ms") in milliseconds.
pct() { awk -v p="$1%" '$1==p { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 }; printf "%.3f", v }' "$2"; }
rps() { awk '/^Requests\/sec/ {print $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {n=$5} END {print n+0}' "$1"; }

echo "== minting $KEYS keys through POST /v1/keys ($CONNS connections)"
# The script times first request to last acknowledgement itself; wrk would run on to -d,
# so it is interrupted once the keys are in.
KEYS_FILE="$work/keys" KEYS="$KEYS" ROOT_KEY="$root" IDENTITY="$identity" \
  run_wrk -d300s -s bench/create-keys.lua "$base/v1/keys" > "$work/create.txt" &
creator=$!
while [ ! -s "$work/keys.time" ] && kill -0 "$creator" 2>/dev/null; do sleep 0.2; done
# wrk is the background job's child (or the job itself): signal both, as a background
# job of a non-interactive shell ignores SIGINT itself.
pkill -INT -P "$creator" 2>/dev/null || true
kill -INT "$creator" 2>/dev/null || true
wait "$creator" || true
minted=$(wc -l < "$work/keys")
create_rate=$(python3 -c "print(round($minted/float(open('$work/keys.time').read())))")
echo "minted $minted keys in $(cat "$work/keys.time") s: $create_rate keys/s acknowledged, each durable (p50 $(pct 50 "$work/create.txt") ms, p99 $(pct 99 "$work/create.txt") ms)"
[ "$minted" -ge "$KEYS" ] || { echo "only $minted keys minted" >&2; exit 1; }

# Sanity: the first key verifies.
code=$(curl -sf -H "Authorization: Bearer $verifier" "$base/v1/verify" -d "{\"key\":\"$(head -1 "$work/keys")\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
[ "$code" = VALID ] || { echo "sanity check failed: $code" >&2; exit 1; }

echo "== warm-up (fills the verify cache with every key)"
KEYS_FILE="$work/keys" VERIFIER="$verifier" BATCH=0 run_wrk -d5s -s bench/verify-json.lua "$base/v1/verify" > /dev/null

# The floor and verify alternate in $PAIRS pairs of phases, DURATION/PAIRS seconds each:
# this VM's speed drifts by 10-20% within a minute, so a ratio of phases run back to
# back is steadier than one of two long phases run one after the other. Each figure
# printed is the median over the pairs.
PAIRS=${PAIRS:-3}
SLICE=$(( DURATION / PAIRS )); [ "$SLICE" -ge 2 ] || SLICE=2
for i in $(seq "$PAIRS"); do
  echo "== floor: GET /healthz (pair $i of $PAIRS)"
  MEASURE_SECS=$SLICE measure "$work/healthz.$i.txt" -d"${SLICE}s" "$base/healthz"
  echo "== POST /v1/verify over $KEYS keys (pair $i of $PAIRS)"
  KEYS_FILE="$work/keys" VERIFIER="$verifier" BATCH=0 MEASURE_SECS=$SLICE \
    measure "$work/verify.$i.txt" -d"${SLICE}s" -s bench/verify-json.lua "$base/v1/verify"
done

valid=$(curl -s "$base/metrics" | grep -F 'keyward_verify_total{code="VALID"}' | awk '{print $2}')
# Recording must keep up: a server that dropped usage events, or detection that
# skipped them, would be measured doing less than it promises. (Counted since start.)
metric_total() { curl -s "$base/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {n += $2} END {print n + 0}'; }
dropped=$(metric_total keyward_usage_events_dropped_total)
skipped=$(metric_total keyward_anomaly_events_skipped_total)
# One line per pair (healthz rps, verify rps, verify p50 ms, p99 ms, CPU µs, non-2xx,
# healthz p50, p99), then the medians.
for i in $(seq "$PAIRS"); do
  echo "$(rps "$work/healthz.$i.txt") $(rps "$work/verify.$i.txt") $(pct 50 "$work/verify.$i.txt") $(pct 99 "$work/verify.$i.txt") $(cat "$work/verify.$i.txt.cpu_us") $(non2xx "$work/verify.$i.txt" || true) $(pct 50 "$work/healthz.$i.txt") $(pct 99 "$work/healthz.$i.txt")"
done > "$work/pairs.txt"
echo
python3 - "$work/pairs.txt" "$valid" "$create_rate" "${USAGE:-on}" "${DETECTION:-on}" "$dropped" "$skipped" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
ratios = [r[1] / r[0] for r in rows]
for n, (r, q) in enumerate(zip(rows, ratios), 1):
    print(f"pair {n}: healthz {r[0]:.0f} req/s, verify {r[1]:.0f} req/s, ratio {q:.3f}, verify p99 {r[3]:.2f} ms")
print(f"RESULT keyward healthz_rps={med(0):.2f} verify_rps={med(1):.2f} ratio={statistics.median(ratios):.3f} "
      f"p50_ms={med(2):.3f} p99_ms={med(3):.3f} non2xx={sum(r[5] for r in rows):.0f} valid_total={sys.argv[2]} "
      f"create_keys_per_s={sys.argv[3]} verify_cpu_us={med(4):.1f} usage={sys.argv[4]} detection={sys.argv[5]} "
      f"pairs={len(rows)} ratio_min={min(ratios):.3f} ratio_max={max(ratios):.3f} p99_max_ms={max(r[3] for r in rows):.3f} "
      f"usage_dropped={sys.argv[6]} detection_skipped={sys.argv[7]}")
print(f"healthz: p50 {med(6):.3f} ms, p99 {med(7):.3f} ms")
# The batch phase below is compared with the same median floor.
open(sys.argv[1] + ".healthz", "w").write(f"{med(0):.2f}")
PY
h=$(cat "$work/pairs.txt.healthz")

# Batches: POST /v1/verify/batch with $BATCH keys per request (BATCH=0 skips this).
if [ "$BATCH" -gt 0 ]; then
  echo "== POST /v1/verify/batch, $BATCH keys per request ($BATCH_CONNS connections)"
  KEYS_FILE="$work/keys" VERIFIER="$verifier" BATCH="$BATCH" CONNS="$BATCH_CONNS" \
    measure "$work/batch.txt" -d"${DURATION}s" -s bench/verify-json.lua "$base/v1/verify/batch"
  b=$(rps "$work/batch.txt")
  printf 'RESULT keyward-batch batch=%s conns=%s requests_rps=%s verifications_per_s=%.0f ratio_to_healthz=%.3f p50_ms=%s p99_ms=%s non2xx=%s cpu_us_per_verification=%.2f usage_dropped=%s detection_skipped=%s\n' \
    "$BATCH" "$BATCH_CONNS" "$b" "$(python3 -c "print($b*$BATCH)")" "$(python3 -c "print($b*$BATCH/$h)")" \
    "$(pct 50 "$work/batch.txt")" "$(pct 99 "$work/batch.txt")" "$(non2xx "$work/batch.txt" || true)" \
    "$(python3 -c "print($(cat "$work/batch.txt.cpu_us")/$BATCH)")" \
    "$(metric_total keyward_usage_events_dropped_total)" "$(metric_total keyward_anomaly_events_skipped_total)"
fi
