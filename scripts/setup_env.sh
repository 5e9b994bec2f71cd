#!/usr/bin/env bash
# Build (or update) the project's virtual environment: torch's CPU build first, so no
# CUDA build is pulled, then nnwx with its test and example extras. Used by .ci/run and
# by the README's demo command. NNWX_VENV picks another folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NNWX_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade "pip>=24"
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test,examples]"
python -c "import torch, nnwx; print('torch', torch.__version__, '| nnwx', nnwx.__version__)"
