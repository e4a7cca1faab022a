#!/usr/bin/env bash
# The test suite and the GPU check's rehearsal under the GPU machine's software, on this CPU
# machine, before a GPU is lent: Python 3.12, torch 2.11 (its CUDA build, which imports and runs
# on CPU), torchvision 0.26 and transformers 5.17 (the versions device/KINDS.md lists for the
# lent image, 2026-11), with PyAV and pydantic installed from gpu_bundle/ the way
# bench/gpu_check.sh installs them there (`--no-index`). A version difference that would break the
# GPU run shows up here instead, where it costs no device time.
#
#   bench/gpu_lookalike.sh [VENV]     # default /tmp/progvid_gpu_lookalike; needs PyPI (about 3 GB
#                                     # of wheels on first use) and gpu_bundle/ (make gpu-bundle)
#
# Environment: PYTHON312 (a Python 3.12 interpreter; default python3.12, then pyenv's 3.12),
# LOOKALIKE_PYTEST_ARGS (extra pytest arguments, e.g. "-k interop").
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
VENV=${1:-/tmp/progvid_gpu_lookalike}
# what the lent image holds (device/KINDS.md, "pip list, as a session saw it", 2026-11)
IMAGE_PINS=(torch==2.11.0 torchvision==0.26.0 transformers==5.17.0 safetensors==0.8.0
            huggingface_hub==1.33.0 numpy pillow pyyaml tqdm tensorboard matplotlib
            pytest pytest-timeout pytest-xdist)

find_python() {
  local c
  for c in "${PYTHON312:-}" python3.12 "$(pyenv root 2>/dev/null)/versions/"3.12*/bin/python; do
    [ -n "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null \
      && { echo "$c"; return 0; }
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(find_python) || { echo "gpu_lookalike: no Python 3.12 found (set PYTHON312)" >&2; exit 2; }
  "$py" -m venv "$VENV"
fi
if ! ls "$ROOT"/gpu_bundle/*.whl > /dev/null 2>&1; then
  echo "gpu_lookalike: no gpu_bundle/ (run make gpu-bundle first)" >&2
  exit 2
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# --isolated: PyPI itself, past this machine's pip configuration (local wheels, a torch cap)
"${PIP[@]}" --isolated "${IMAGE_PINS[@]}"
mapfile -t reqs < <("$VENV/bin/python" "$ROOT/bench/gpu_check.py" reqs)
"${PIP[@]}" --no-index --find-links "$ROOT/gpu_bundle" "${reqs[@]}"
"${PIP[@]}" --no-index --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" - <<'EOF'
import sys, torch, transformers, av, pydantic
print(f"gpu_lookalike: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, av {av.__version__}, pydantic {pydantic.__version__}")
EOF
cd "$ROOT"
status=0
# shellcheck disable=SC2086
PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -q -n 2 --dist worksteal -p no:cacheprovider \
  ${LOOKALIKE_PYTEST_ARGS:-} || status=1
PATH="$VENV/bin:$PATH" PYTHON="$VENV/bin/python" bash bench/gpu_check.sh \
  "${TMPDIR:-/tmp}/progvid_gpu_lookalike_check" --cpu-rehearsal || status=1
exit $status
