#!/usr/bin/env bash
# Makes .venv/ with the Python packages a test or benchmark needs (from PyPI), once.
#   scripts/python-env.sh PACKAGE...      prints the venv's python path
#   VENV=.venv-x scripts/python-env.sh …  another venv, for packages that would clash
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
# Tests run in parallel and may ask at once: one at a time makes or fills the venv.
exec 9>"$venv.lock"
flock 9
# A venv without pip was cut short while being made: make it again.
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv --clear "$venv" >&2
fi
missing=()
for pkg in "$@"; do
  # The import that proves a package is there: tritonclient[http,grpc] needs
  # tritonclient.http and tritonclient.grpc; others import by their own name. A version
  # pin (==2.48.0) is not checked: a pinned package gets a venv of its own (VENV=).
  name=${pkg%%[=<>]*}
  case "$name" in
    tritonclient\[*) extras=${name#*[}; modules=$(echo "${extras%]}" | tr ',' '\n' | sed 's/^/tritonclient./') ;;
    nvidia-cuda-runtime-cu12) modules=nvidia.cuda_runtime ;;
    torchserve) modules=ts ;;
    torch-model-archiver) modules=model_archiver ;;
    pyyaml) modules=yaml ;;
    pyopenssl) modules=OpenSSL ;;
    *) modules=${name//-/_} ;;
  esac
  for module in $modules; do
    "$venv/bin/python" -c "import $module" 2>/dev/null || { missing+=("$pkg"); break; }
  done
done
if [ ${#missing[@]} -gt 0 ]; then
  # No wheel cache: PyTorch alone would leave another 3 GB of wheels behind.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "${missing[@]}" >&2
fi
echo "$PWD/$venv/bin/python"
