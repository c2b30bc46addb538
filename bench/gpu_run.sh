#!/usr/bin/env bash
# The GPU runbook (see bench/gpu_run.py): on a fresh NVIDIA machine with Python + torch only,
# install threpair from the wheels carried in gpu_carry/ (bench/gather_wheels.sh gathers them;
# torch, numpy, OpenCV, onnxruntime stay the machine's own), then run the stages.
#
#   bash bench/gpu_run.sh --stages env,tests,anchor --export "$OUT"   # device call 1
#   bash bench/gpu_run.sh --stages kim,speed --export "$OUT"          # device call 2
#   bash bench/gpu_run.sh --dry-run --out /tmp/gpu_dry                # here, CPU, tiny budgets
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d gpu_carry/wheels ] && ! "$PY" -c "import ffmpeg, imageio_ffmpeg, retinaface" 2>/dev/null; then
    # --no-deps: pip must not replace the machine's torch / OpenCV / numpy
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/threpair_site gpu_carry/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/threpair_site${PYTHONPATH:+:$PYTHONPATH}
fi
# the project itself from the working tree (no build step: `python -m threpair` works)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${THREPAIR_CLIPS:-}" ] && [ -d gpu_carry/clips ] && [ ! -d ../shared/data/clips ]; then
    export THREPAIR_CLIPS=$PWD/gpu_carry/clips
fi
"$PY" -c "import threpair, torch; print('threpair', threpair.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
exec "$PY" bench/gpu_run.py "$@"
