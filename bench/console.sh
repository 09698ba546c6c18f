#!/usr/bin/env bash
# Console page times over HTTP: starts Keyward (PROFILE=debug by default, release with
# PROFILE=release) on an embedded store, adds $IDENTITIES identities with 3 keys each
# through the API, signs in to the console with the root key (cookie and CSRF token, as
# a browser does), then fetches each main page $N times with curl and prints the median
# and p90 of the whole answer time.
#
#   bench/console.sh                        # IDENTITIES=20 N=30 PROFILE=debug
#   PROFILE=release IDENTITIES=200 bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDENTITIES=${IDENTITIES:-20}
N=${N:-30}
PROFILE=${PROFILE:-debug}
if [ "$PROFILE" = release ]; then cargo build --release -q -p keyward; else cargo build -q -p keyward; fi
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
KEYWARD_LOG=warn "target/$PROFILE/keyward" serve --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/serve.log" &
server=$!
for _ in $(seq 200); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.05; done
root=$(awk '/root key:/ {print $3}' "$work/serve.log")
api() { curl -sf -H "Authorization: Bearer $root" -H 'content-type: application/json' "$@"; }
for i in $(seq "$IDENTITIES"); do
  id=$(api -d "{\"name\":\"svc-$i\",\"owner\":\"team-$((i % 5))\"}" "$base/v1/identities" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in 1 2 3; do
    api -o /dev/null -d "{\"identity_id\":\"$id\",\"scopes\":[\"orders:read\"]}" "$base/v1/keys"
  done
done
jar="$work/cookies"
csrf=$(curl -s -c "$jar" "$base/console/login" | grep -o 'name="csrf" value="[0-9a-f]*"' | head -1 | cut -d'"' -f4)
# The root key goes in the form body (never the URL), read from a file.
printf 'csrf=%s&mode=key&key=%s' "$csrf" "$root" >"$work/form"
curl -s -b "$jar" -c "$jar" -o /dev/null --data "@$work/form" "$base/console/login"
echo "profile $PROFILE, $IDENTITIES identities, $((IDENTITIES * 3)) keys, n=$N per page"
for page in /console /console/identities /console/audit /console/alerts; do
  for _ in $(seq "$N"); do curl -s -b "$jar" -o /dev/null -w '%{time_total}\n' "$base$page"; done |
    sort -n | awk -v p="$page" '{a[NR]=$1} END {printf "%-22s median %6.1f ms   p90 %6.1f ms\n", p, a[int((NR+1)/2)]*1000, a[int(NR*0.9)]*1000}'
done
