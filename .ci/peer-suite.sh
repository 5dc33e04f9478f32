#!/usr/bin/env bash
# Run the reference instrumentation's own test suite, unchanged, against otel_wsgi.compat, and fail unless
# at least PEER_MIN_PASSED of its tests pass (the README lists the deviations behind the others).
#
# The tests ship in the PyPI sdist of opentelemetry-instrumentation-wsgi; they are unpacked under /tmp only,
# never into this repository. The reference package itself is not installed: a pytest plugin registers
# otel_wsgi.compat under its module name before the tests are imported.
#
# environment (optional): PEER_WSGI_VERSION (default 0.66b2), PEER_MIN_PASSED (default 50),
#   PEER_PYTHON (default python3), PEER_CACHE (a /tmp directory kept between runs for the venv and sdist)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VERSION=${PEER_WSGI_VERSION:-0.66b2}
MIN_PASSED=${PEER_MIN_PASSED:-50}
CACHE=${PEER_CACHE:-/tmp/otel-wsgi-ci-peer-$VERSION}
case "$(realpath -m "$CACHE")" in /tmp/*) ;; *) echo "peer-suite: PEER_CACHE must be under /tmp" >&2; exit 2 ;; esac

pip_() { "$CACHE/venv/bin/python" -m pip -q --disable-pip-version-check "$@"; }

# 1. A venv with the suite's dependencies, and the sdist (both kept in $CACHE between runs).
if [ ! -f "$CACHE/ready" ]; then
  rm -rf "$CACHE" && mkdir -p "$CACHE/sdist"
  "${PEER_PYTHON:-python3}" -m venv "$CACHE/venv"
  pip_ download --no-deps --no-binary :all: "opentelemetry-instrumentation-wsgi==$VERSION" -d "$CACHE/sdist"
  tar -xzf "$CACHE"/sdist/*.tar.gz -C "$CACHE/sdist"
  # The reference's own pinned dependencies (not the reference), the SDK and pytest; the test utilities
  # pin exact API/SDK versions that lag patch releases, so they go in without their pins.
  mapfile -t reqs < <(sed -n 's/^Requires-Dist: //p' "$CACHE"/sdist/*/PKG-INFO | grep -v 'extra ==' | sed 's/ *;.*$//')
  pip_ install "${reqs[@]}" opentelemetry-sdk "pytest>=8"
  pip_ install --no-deps "opentelemetry-test-utils==$VERSION"
  touch "$CACHE/ready"
fi
if pip_ show opentelemetry-instrumentation-wsgi >/dev/null 2>&1; then
  echo "peer-suite: the reference package is installed in $CACHE/venv; refusing to run" >&2
  exit 2
fi

# 2. A fresh copy of the tests and the plugin that stands otel_wsgi.compat in for the reference.
RUN=$(mktemp -d /tmp/otel-wsgi-peer-run.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
cp -r "$CACHE"/sdist/*/tests "$RUN/tests"
printf '[pytest]\n' > "$RUN/pytest.ini"
cat > "$RUN/compat_in_place.py" <<'PY'
"""pytest plugin: otel_wsgi.compat answers for opentelemetry.instrumentation.wsgi."""
import sys

import opentelemetry.instrumentation as namespace

import otel_wsgi.compat

sys.modules["opentelemetry.instrumentation.wsgi"] = otel_wsgi.compat
namespace.wsgi = otel_wsgi.compat
PY

# 3. Run, and judge by the count of passed tests (pytest exits 1 when any test fails).
set +e
(cd "$RUN" && PYTHONPATH="$RUN:$REPO" PYTHONDONTWRITEBYTECODE=1 "$CACHE/venv/bin/python" -m pytest \
  -c "$RUN/pytest.ini" --rootdir "$RUN" -p compat_in_place -p no:cacheprovider -q -rfE tests) > "$RUN/log" 2>&1
rc=$?
set -e
grep -E '^(FAILED|ERROR) ' "$RUN/log" | cut -c1-200 || true
summary=$(tail -n1 "$RUN/log")
echo "peer-suite: opentelemetry-instrumentation-wsgi $VERSION tests against otel_wsgi.compat: $summary"
passed=$(grep -oE '[0-9]+ passed' <<< "$summary" | grep -oE '[0-9]+' || echo 0)
if [ "$rc" -gt 1 ] || [ "$passed" -lt "$MIN_PASSED" ]; then
  tail -n 40 "$RUN/log"
  echo "peer-suite: $passed passed, at least $MIN_PASSED required" >&2
  exit 1
fi
