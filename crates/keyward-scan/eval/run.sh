#!/usr/bin/env bash
# The evaluation: a labelled corpus scored for precision and recall, and throughput on a
# large clean tree, for keyward-scan and, where installed, gitleaks and ripsecrets.
#
#   crates/keyward-scan/eval/run.sh [CORPUS_DIR] [CLEAN_TREE]
#
# GITLEAKS and RIPSECRETS name the other scanners (default: on PATH). See BENCHMARKS.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
corpus="${1:-${TMPDIR:-/tmp}/keyward-corpus}"
tree="${2:-$HOME/.cargo/registry/src}"
seed="${SEED:-8}"
gitleaks="${GITLEAKS:-$(command -v gitleaks || true)}"
ripsecrets="${RIPSECRETS:-$(command -v ripsecrets || true)}"
out="${OUT:-${TMPDIR:-/tmp}/keyward-eval}"
mkdir -p "$out"

cd "$repo"
cargo build --release -p keyward-scan --example kwscan --example corpus
kwscan="$repo/target/release/examples/kwscan"
rm -rf "$corpus"
"$repo/target/release/examples/corpus" "$corpus" "${POSITIVES:-600}" "${NEGATIVES:-600}" "$seed"
chmod -R o+rX "$corpus"

echo "== corpus: precision and recall"
"$kwscan" "$corpus" >"$out/keyward.json" 2>/dev/null || true
python3 "$here/score.py" "$corpus" keyward "$out/keyward.json"
if [ -n "$gitleaks" ]; then
  "$gitleaks" dir "$corpus" --report-format json --report-path - --no-banner --exit-code 0 \
    >"$out/gitleaks.json" 2>/dev/null
  python3 "$here/score.py" "$corpus" gitleaks "$out/gitleaks.json"
fi
if [ -n "$ripsecrets" ]; then
  "$ripsecrets" "$corpus" >"$out/ripsecrets.txt" 2>/dev/null || true
  python3 "$here/score.py" "$corpus" ripsecrets "$out/ripsecrets.txt"
fi

echo "== throughput on $tree ($(du -sh "$tree" | cut -f1), $(find "$tree" -type f | wc -l) files)"
echo "load before: $(cat /proc/loadavg)"
/usr/bin/time -f "keyward-scan: wall %e s, user %U s, sys %S s, max RSS %M KB" \
  "$kwscan" "$tree" >"$out/keyward-tree.json" 2>"$out/keyward-tree.err" || true
tail -2 "$out/keyward-tree.err"
if [ -n "$gitleaks" ]; then
  /usr/bin/time -f "gitleaks: wall %e s, user %U s, sys %S s, max RSS %M KB" \
    "$gitleaks" dir "$tree" --report-format json --report-path - --no-banner --exit-code 0 \
    >"$out/gitleaks-tree.json" 2>"$out/gitleaks-tree.err" || true
  tail -1 "$out/gitleaks-tree.err"
  python3 -c "import json,sys; print('gitleaks findings:', len(json.load(open(sys.argv[1]))))" "$out/gitleaks-tree.json"
fi
if [ -n "$ripsecrets" ] && [ -z "${SKIP_RIPSECRETS_TREE:-}" ]; then
  /usr/bin/time -f "ripsecrets: wall %e s, user %U s, sys %S s, max RSS %M KB" \
    "$ripsecrets" "$tree" >"$out/ripsecrets-tree.txt" 2>"$out/ripsecrets-tree.err" || true
  tail -1 "$out/ripsecrets-tree.err"
  echo "ripsecrets findings: $(wc -l <"$out/ripsecrets-tree.txt")"
fi
echo "load after: $(cat /proc/loadavg)"
