#!/usr/bin/env bash
# Create the virtual environment and install livedrag with its dev and cluster extras (the
# cluster tests start real Redis and PostgreSQL servers and talk to them with redis-py and psycopg).
# torch==2.13.0 is installed first when no torch is importable (a CPU build is cached on
# the project's machines; an unpinned torch would pull gigabytes of CUDA packages).
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] no torch found: installing torch==2.13.0"
  "$PY" -m pip install -q "torch==2.13.0"
fi
echo "[bootstrap] installing livedrag[dev,cluster]"
"$PY" -m pip install -q -e ".[dev,cluster]"
echo "[bootstrap] done: $("$PY" -c 'import torch; print("torch", torch.__version__)')"
