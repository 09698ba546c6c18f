#!/usr/bin/env bash
# What recording usage events, and detecting anomalies in them, cost verification over
# HTTP (issues 5 and 6): runs bench/load.sh in three modes, in turn, ROUNDS times each:
#   full           usage recorded and the anomaly tail running (a single node leads),
#   no-detection   usage recorded, detection off,
#   off            neither,
# and prints verify throughput and the server's CPU time per verify request for each,
# with the ratios to `off`.
#
# CPU per request is the figure to trust on a shared machine: throughput moves with
# whatever else runs, CPU time per request much less. On a saturated server the
# throughput ratio is the inverse of the CPU ratio.
#
#   bench/usage-cost.sh                 # ROUNDS=2, KEYS=20000 DURATION=15 (load.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$ROUNDS"); do
  for mode in full no-detection off; do
    echo "== round $r: $mode"
    case $mode in
      full) usage=on detection=on ;;
      no-detection) usage=on detection=off ;;
      off) usage=off detection=off ;;
    esac
    BATCH=0 USAGE=$usage DETECTION=$detection bench/load.sh | tee -a "$out" | grep -E '^RESULT|server CPU'
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in l.split()[2:]) for l in open(sys.argv[1]) if l.startswith("RESULT")]
def mode(r):
    if r["usage"] == "off":
        return "off"
    return "full" if r["detection"] == "on" else "no-detection"
def med(m, field):
    return statistics.median(float(r[field]) for r in rows if mode(r) == m)
print()
off_rps, off_cpu = med("off", "verify_rps"), med("off", "verify_cpu_us")
for m in ("full", "no-detection", "off"):
    rps, cpu = med(m, "verify_rps"), med(m, "verify_cpu_us")
    print(f"RESULT usage-cost mode={m} verify_rps={rps:.0f} ratio_to_off={rps/off_rps:.3f} "
          f"server_cpu_us_per_verify={cpu:.1f} saturated_throughput_ratio={off_cpu/cpu:.3f} "
          f"(medians of {sum(1 for r in rows if mode(r) == m)} runs)")
PY
