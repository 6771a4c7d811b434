#!/usr/bin/env bash
# Run every test: the Python suite (engine, server, browser end-to-end) and the JS protocol tests.
# Exits non-zero if any part fails or if no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-68719476736}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1073741824}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
status=0

echo "== python tests (pytest) =="
"$PY" -m pytest -ra "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing"; status=1
elif [ $rc -ne 0 ]; then status=$rc; fi

if compgen -G "web/tests/*.test.mjs" >/dev/null; then
  echo "== javascript tests (node --test) =="
  if command -v node >/dev/null 2>&1; then
    node --test web/tests/ || status=1
  else
    echo "node not found: JS protocol tests not run"; status=1
  fi
fi
exit $status
