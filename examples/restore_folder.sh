#!/usr/bin/env bash
# Restore every clip in a folder (and its subfolders) with one identity model.
#
#   examples/restore_folder.sh IN_DIR OUT_DIR MODEL [JOBS]
#   examples/restore_folder.sh generated/ fixed/ checkpoints/alice.safetensors 2
#
# OUT_DIR mirrors IN_DIR: generated/day1/take3.mp4 -> fixed/day1/take3.mp4. Videos are files
# ending in .mp4 .mov .mkv .avi .webm .m4v (any case); hidden files are left out.
#
# Safe to run unattended and to run again:
# - a file that cannot be read (not a video, truncated, empty, ...) is logged as failed and the
#   batch goes on with the next one;
# - outputs appear only when complete, so after a crash, Ctrl-C or a kill, running this again
#   skips the finished files and redoes the rest (add --overwrite to redo everything);
# - one JSON line per file goes to the log (status, reason, frames, faces, confidence, timings).
#
# Exit status: 0 all restored (or skipped), 1 some files failed, 2 bad arguments,
# 130 interrupted (Ctrl-C / SIGTERM).
set -euo pipefail

usage="usage: $0 IN_DIR OUT_DIR MODEL [JOBS]   (MODEL: a .safetensors checkpoint or passthrough)"
in_dir=${1:?$usage}
out_dir=${2:?$usage}
model=${3:?$usage}
# Files restored at the same time. 1 is right for one GPU or a small CPU; 2-4 helps when
# decoding/encoding (CPU) rather than the model is the bottleneck.
jobs=${4:-1}

mkdir -p "$out_dir"
log="$out_dir/threpair-$(date +%Y%m%d-%H%M%S).jsonl"

status=0
threpair restore "$in_dir" "$out_dir" --model "$model" --jobs "$jobs" --log "$log" || status=$?

if [ "$status" -ne 0 ]; then
    echo "threpair exited with status $status; log: $log" >&2
    # List the files that failed and why (plain python, no jq needed).
    python3 - "$log" >&2 <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["status"] in ("failed", "interrupted"):
        print(f"  {r['status']:>11}  {r['name']}: {r['reason']}")
PY
fi
exit "$status"
