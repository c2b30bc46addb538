#!/usr/bin/env bash
# Train an identity model on real footage of one person, then restore a folder of generated
# (lip-synced) clips of that person with it.
#
#   examples/train_then_restore.sh REAL OUT_DIR GENERATED [MINUTES]
#   examples/train_then_restore.sh footage/alice/ fixed/alice/ generated/alice/ 30
#
# REAL: a video file or a folder of videos of the real person (not generated ones): the more
# varied (expressions, head poses, lighting) the better. The checkpoint goes to
# checkpoints/<name of REAL>.safetensors.
#
# Re-runnable: training is skipped when the checkpoint exists (it is written only at the end,
# atomically); an interrupted training resumes from its state file (--resume); restoring
# skips the clips already done.
set -euo pipefail

usage="usage: $0 REAL OUT_DIR GENERATED [MINUTES]"
real=${1:?$usage}
out_dir=${2:?$usage}
generated=${3:?$usage}
minutes=${4:-30}

name=$(basename "${real%/}")
name=${name%.*}
ckpt="checkpoints/$name.safetensors"

if [ -f "$ckpt" ]; then
    echo "using the existing model $ckpt (delete it to train again)"
else
    # GPU: preset "base"; CPU: "small" (picked automatically). Stops after MINUTES or the
    # default step count, whichever comes first.
    threpair train-identity "$real" --out "$ckpt" --minutes "$minutes" --resume
fi

# What was trained, with the validation numbers (PSNR degraded -> repaired).
threpair inspect "$ckpt"

mkdir -p "$out_dir"
status=0
threpair restore "$generated" "$out_dir" --model "$ckpt" --log "$out_dir/restore.jsonl" \
    || status=$?
if [ "$status" -eq 1 ]; then
    echo "some clips failed; see the lines with \"status\": \"failed\" in $out_dir/restore.jsonl" >&2
fi
exit "$status"
