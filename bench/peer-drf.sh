#!/usr/bin/env bash
# peer-drf.sh: peer benchmark for Keyward.
#
# Measures djangorestframework-api-key (the usual "API keys for Django REST
# Framework" package) verifying its own keys on a minimal endpoint, served by
# gunicorn sync workers, under the same wrk settings Keyward's benchmark uses:
# server on one core, wrk on the other, one wrk thread, CONNS connections,
# every request carrying a different key taken in order from KEYS keys.
#
# Everything it makes (virtualenv unless cached, Django project, SQLite
# database, key file, gunicorn) lives in a temporary folder that is removed on
# exit, also on failure. Only wrk's full output is kept; its path is printed.
#
# Environment (all optional):
#   KEYS=20000          number of API keys created and cycled through
#   CONNS=32            wrk connections
#   DURATION=15         measured wrk run, seconds (after a 2 s warm-up)
#   DRF_WORKERS=2       gunicorn sync worker processes
#   SERVER_CPU=0        core gunicorn is pinned to
#   LOAD_CPU=1          core wrk is pinned to (same name as bench/load.sh)
#   KEYWARD_BENCH_CACHE=$HOME/.cache/keyward-bench
#                       a virtualenv at $KEYWARD_BENCH_CACHE/drf-venv with the
#                       pinned versions is reused instead of installing anew
#   DRF_CACHE_VENV=1    build the virtualenv at that cached path (for reruns)
#                       rather than in the temporary folder
#   BENCH_OUT_DIR       where wrk's output is saved
#                       (default $KEYWARD_BENCH_CACHE/results)
#
# Last line of output on success:
#   RESULT drf rps=<requests/sec> p50_ms=<ms> p99_ms=<ms> non2xx=<count>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LUA="$HERE/keys-header.lua"

KEYS="${KEYS:-20000}"
CONNS="${CONNS:-32}"
DURATION="${DURATION:-15}"
DRF_WORKERS="${DRF_WORKERS:-2}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
CACHE="${KEYWARD_BENCH_CACHE:-$HOME/.cache/keyward-bench}"
OUT_DIR="${BENCH_OUT_DIR:-$CACHE/results}"
WARMUP=2

# Pinned so that reruns (and the cached venv) measure the same code. These are
# the newest releases that install on Python 3.11 at the time of writing;
# Django 5.2 is the LTS line.
PINS=(
  "Django==5.2.19"
  "djangorestframework==3.18.3"
  "djangorestframework-api-key==3.1.0"
  "gunicorn==27.0.1"
)

die() { echo "peer-drf: FAIL: $*" >&2; exit 1; }
log() { echo "peer-drf: $*" >&2; }

for tool in python3 wrk taskset curl; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -f "$LUA" ]] || die "missing $LUA"
[[ "$KEYS" =~ ^[1-9][0-9]*$ ]] || die "KEYS must be a positive integer"

# --- temporary folder and cleanup --------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/peer-drf.XXXXXX")"
GUNICORN_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$GUNICORN_PID" ]] && kill -0 "$GUNICORN_PID" 2>/dev/null; then
    # TERM makes the gunicorn master stop its workers too; give it a moment,
    # then make sure nothing is left behind.
    kill -TERM "$GUNICORN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$GUNICORN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GUNICORN_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$WORK/gunicorn.log" ]]; then
    log "last lines of the gunicorn log:"
    tail -n 20 "$WORK/gunicorn.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. virtualenv ----------------------------------------------------------
# Reuse the cached venv only if it holds exactly the pinned versions; a stale
# cache would silently benchmark other code.
venv_matches() {
  [[ -x "$1/bin/python" ]] || return 1
  local frozen
  frozen="$("$1/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null)" || return 1
  local pin
  for pin in "${PINS[@]}"; do
    grep -qix "$pin" <<<"$frozen" || return 1
  done
}

CACHED_VENV="$CACHE/drf-venv"
if venv_matches "$CACHED_VENV"; then
  VENV="$CACHED_VENV"
  log "reusing virtualenv $VENV"
else
  if [[ "${DRF_CACHE_VENV:-0}" == 1 ]]; then
    VENV="$CACHED_VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
  else
    VENV="$WORK/venv"
  fi
  log "creating virtualenv $VENV and installing ${PINS[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" \
    || die "pip install failed"
fi
PY="$VENV/bin/python"
VERSIONS="$("$PY" - <<'EOF'
import importlib.metadata as m, sys
names = ["Django", "djangorestframework", "djangorestframework-api-key", "gunicorn"]
print(" ".join(f"{n}=={m.version(n)}" for n in names), f"python=={sys.version.split()[0]}")
EOF
)"
log "versions: $VERSIONS"

# --- 2. minimal Django project ----------------------------------------------
# A settings module and a URL module with one view. No middleware at all: sessions,
# CSRF, auth middleware etc. do nothing for a header-authenticated GET and
# would only add per-request cost that is not the key check being compared.
PROJ="$WORK/proj"
mkdir -p "$PROJ"
cat >"$PROJ/benchsite.py" <<'EOF'
"""Settings of the benchmark site."""
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# Throwaway site on loopback that signs nothing; a fixed value keeps all
# gunicorn workers identical.
SECRET_KEY = "peer-drf-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "benchurls"
WSGI_APPLICATION = None

# rest_framework_api_key needs only itself and DRF; contrib.auth and
# contenttypes are left out because no user model is involved (see
# UNAUTHENTICATED_USER below).
INSTALLED_APPS = ["rest_framework", "rest_framework_api_key"]
MIDDLEWARE = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # Keep the connection open across requests, as any server (Keyward
        # included) keeps its database handle; Django's default (0) would
        # reopen SQLite on every request and measure that instead.
        "CONN_MAX_AGE": None,
    }
}

REST_FRAMEWORK = {
    # The API key is the only credential: with no authentication classes DRF
    # skips session/basic auth lookups, and HasAPIKey alone decides.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework_api_key.permissions.HasAPIKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
EOF

# URLs and the single view; a separate module because views import models,
# which Django allows only after settings are loaded.
cat >"$PROJ/benchurls.py" <<'EOF'
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response
from rest_framework_api_key.permissions import HasAPIKey


@api_view(["GET"])
@permission_classes([HasAPIKey])
def check(request):
    return Response({"ok": True})


urlpatterns = [path("check", check)]
EOF

cat >"$PROJ/wsgi.py" <<'EOF'
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
EOF

cat >"$PROJ/manage.py" <<'EOF'
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
EOF

log "migrating"
(cd "$PROJ" && "$PY" manage.py migrate --verbosity 0) || die "migrate failed"

# --- 3. create the keys -----------------------------------------------------
# Through the package's own API (create_key), so the stored hashes are exactly
# what it would store in production. One transaction around the loop: without
# it every create_key is its own SQLite commit (an fsync each), which would
# measure the disk, not the package.
KEYS_FILE="$WORK/keys.txt"
log "creating $KEYS API keys"
KEYGEN_OUT="$(cd "$PROJ" && KEYS="$KEYS" KEYS_FILE="$KEYS_FILE" "$PY" - <<'EOF'
import os, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite")
import django
django.setup()
from django.db import transaction
from rest_framework_api_key.models import APIKey

n = int(os.environ["KEYS"])
t0 = time.perf_counter()
keys = []
with transaction.atomic():
    for i in range(n):
        _, key = APIKey.objects.create_key(name=f"bench-{i}")
        keys.append(key)
elapsed = time.perf_counter() - t0
with open(os.environ["KEYS_FILE"], "w") as f:
    f.write("\n".join(keys) + "\n")
print(f"{elapsed:.2f} {APIKey.objects.count()}")
EOF
)" || die "key creation failed"
read -r KEYGEN_SECONDS KEYS_IN_DB <<<"$KEYGEN_OUT"
[[ "$KEYS_IN_DB" == "$KEYS" ]] || die "expected $KEYS keys in the database, found $KEYS_IN_DB"
[[ "$(wc -l <"$KEYS_FILE")" -eq "$KEYS" ]] || die "key file does not hold $KEYS keys"
log "created $KEYS keys in ${KEYGEN_SECONDS}s"

# --- 4. gunicorn ------------------------------------------------------------
# Free port: let the kernel pick one, then hand it to gunicorn. The window
# between closing and rebinding is tiny on a machine we are alone on.
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
URL="http://127.0.0.1:$PORT/check"

# Sync workers: the gunicorn default and the common Django deployment. They
# answer with "Connection: close", so wrk reconnects for every request; that
# is part of what this stack costs. No access log (gunicorn's default), only
# warnings, so logging does not eat the server core.
log "starting gunicorn ($DRF_WORKERS sync workers) on core $SERVER_CPU, port $PORT"
(cd "$PROJ" && exec taskset -c "$SERVER_CPU" "$VENV/bin/gunicorn" wsgi:application \
  --bind "127.0.0.1:$PORT" --workers "$DRF_WORKERS" --worker-class sync \
  --log-level warning --error-logfile "$WORK/gunicorn.log") &
GUNICORN_PID=$!

up=0
for _ in $(seq 150); do
  kill -0 "$GUNICORN_PID" 2>/dev/null || die "gunicorn exited during startup"
  if curl -s -o /dev/null "$URL"; then up=1; break; fi
  sleep 0.2
done
[[ $up == 1 ]] || die "gunicorn did not answer on $URL within 30 s"

# --- sanity checks before measuring -----------------------------------------
# A benchmark of a server that rejects everything (or accepts everything) is
# worthless, so check both sides first: a real key gets 200, and both a key
# with an unknown prefix and a real prefix with a wrong secret are refused.
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Api-Key $1" "$URL"; }
VALID_KEY="$(head -n 1 "$KEYS_FILE")"
LAST_KEY="$(tail -n 1 "$KEYS_FILE")"
BAD_PREFIX_KEY="zzzzzzzz.$(printf 'x%.0s' $(seq 32))"
WRONG_SECRET_KEY="${VALID_KEY%%.*}.$(printf 'y%.0s' $(seq 32))"

for k in "$VALID_KEY" "$LAST_KEY"; do
  code="$(status "$k")"
  [[ "$code" == 200 ]] || die "a valid key got HTTP $code instead of 200"
done
for k in "$BAD_PREFIX_KEY" "$WRONG_SECRET_KEY"; do
  code="$(status "$k")"
  [[ "$code" == 403 || "$code" == 401 ]] || die "a made-up key got HTTP $code instead of 401/403"
done
code="$(curl -s -o /dev/null -w '%{http_code}' "$URL")"
[[ "$code" == 403 || "$code" == 401 ]] || die "a request without a key got HTTP $code instead of 401/403"
body="$(curl -s -H "Authorization: Api-Key $VALID_KEY" "$URL")"
log "checks passed: valid keys -> 200 $body; unknown prefix, wrong secret, no key -> 401/403"

# --- 5. load ----------------------------------------------------------------
export KEYS_FILE KEY_HEADER="Authorization" KEY_PREFIX="Api-Key " WRK_THREADS=1
run_wrk() {
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$1"s --latency -s "$LUA" "$URL"
}

log "warm-up ${WARMUP}s"
run_wrk "$WARMUP" >/dev/null || die "wrk warm-up failed"

mkdir -p "$OUT_DIR"
OUT_FILE="$OUT_DIR/drf-$(date +%Y%m%d-%H%M%S).txt"
log "measuring ${DURATION}s with $CONNS connections, $KEYS keys"
# Context for whoever reads the file later: what ran, and how busy the
# machine was (other work on the 2 cores skews the numbers). The file is
# written only once wrk has finished, so an interrupted run leaves none.
HEADER="# peer-drf: $(date -Is) keys=$KEYS conns=$CONNS duration=${DURATION}s workers=$DRF_WORKERS server_cpu=$SERVER_CPU load_cpu=$LOAD_CPU
# $VERSIONS
# key creation: ${KEYGEN_SECONDS}s; loadavg before run: $(cut -d' ' -f1-3 /proc/loadavg)"
WRK_OUT="$(run_wrk "$DURATION")" || die "wrk failed"
printf '%s\n%s\n' "$HEADER" "$WRK_OUT" >"$OUT_FILE"
printf '%s\n' "$WRK_OUT" >&2

# --- 6. summary -------------------------------------------------------------
# wrk prints latencies with a unit suffix (us, ms, s, m); convert to ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (match(v, /^[0-9.]+/)) { n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1) } else { print "NaN"; exit }
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0) { print "NaN"; exit }
    printf "%.3f\n", n * f
  }'
}
RPS="$(awk '/^Requests\/sec:/ {print $2}' <<<"$WRK_OUT")"
P50="$(awk '$1 == "50%" {print $2}' <<<"$WRK_OUT")"
P99="$(awk '$1 == "99%" {print $2}' <<<"$WRK_OUT")"
NON2XX="$(awk -F: '/Non-2xx or 3xx responses/ {gsub(/ /, "", $2); print $2}' <<<"$WRK_OUT")"
SOCKERR="$(grep -E '^ *Socket errors:' <<<"$WRK_OUT" || true)"
[[ -n "$RPS" && -n "$P50" && -n "$P99" ]] || die "could not parse wrk output (saved in $OUT_FILE)"

log "wrk output saved to $OUT_FILE"
echo "wrk output: $OUT_FILE"
echo "key creation: ${KEYGEN_SECONDS}s for $KEYS keys"
if [[ -n "$SOCKERR" ]]; then
  echo "WARNING drf:${SOCKERR}"
fi
RESULT="RESULT drf rps=$RPS p50_ms=$(to_ms "$P50") p99_ms=$(to_ms "$P99") non2xx=${NON2XX:-0}"
echo "$RESULT" | tee -a "$OUT_FILE"
