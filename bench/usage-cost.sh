#!/usr/bin/env bash
# What recording usage events costs verification over HTTP (issue 5): runs bench/load.sh
# with usage recording on and off, alternately, ROUNDS times each, and prints verify
# throughput and the server's CPU time per verify request for both, with the ratios.
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
  for usage in on off; do
    echo "== round $r, usage recording $usage"
    USAGE=$usage bench/load.sh | tee -a "$out" | grep -E '^RESULT|server CPU'
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in l.split()[2:]) for l in open(sys.argv[1]) if l.startswith("RESULT")]
def med(usage, field):
    return statistics.median(float(r[field]) for r in rows if r["usage"] == usage)
on_rps, off_rps = med("on", "verify_rps"), med("off", "verify_rps")
on_cpu, off_cpu = med("on", "verify_cpu_us"), med("off", "verify_cpu_us")
print()
print(f"RESULT usage-cost verify_rps on={on_rps:.0f} off={off_rps:.0f} ratio={on_rps/off_rps:.3f}  "
      f"server_cpu_us_per_verify on={on_cpu:.1f} off={off_cpu:.1f} "
      f"saturated_throughput_ratio={off_cpu/on_cpu:.3f} (medians of {len(rows)//2} runs each)")
PY
