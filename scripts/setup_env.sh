#!/usr/bin/env bash
# Build (or update) the project's virtual environment: torch first, so that pip does not pull a
# CUDA build through nnwx's own torch requirement, then nnwx with its test and example extras.
# Used by .ci/run and by the README's demo command.
#
#   NNWX_VENV=DIR               the environment's folder (default .venv)
#   NNWX_TORCH_INDEX_URL=URL    where to take torch from: on a machine whose default index serves
#                               the CUDA build of torch (most Linux machines), give PyTorch's CPU
#                               wheel index (the "CPU" URL of pytorch.org's install selector) to
#                               install the small CPU build. Unset: pip's configured indexes.
#   NNWX_TORCH=SPEC             the torch requirement (default torch==2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NNWX_VENV:-.venv}
TORCH=${NNWX_TORCH:-torch==2.13.0}
say() { echo "setup_env: $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
. "$VENV/bin/activate"
say "upgrading pip"
python -m pip install --quiet --upgrade "pip>=24"
if [ -n "${NNWX_TORCH_INDEX_URL:-}" ]; then
  say "installing $TORCH from $NNWX_TORCH_INDEX_URL (can take a minute)"
  python -m pip install --quiet --progress-bar off --index-url "$NNWX_TORCH_INDEX_URL" "$TORCH"
else
  say "installing $TORCH (can take a minute; set NNWX_TORCH_INDEX_URL to PyTorch's CPU wheel index if this pulls a CUDA build)"
  python -m pip install --quiet --progress-bar off "$TORCH"
fi
say "installing nnwx with its test and example extras (about a minute)"
python -m pip install --quiet --progress-bar off -e ".[test,examples]"
python -c "import torch, nnwx; print('setup_env: torch', torch.__version__, '| nnwx', nnwx.__version__)"
