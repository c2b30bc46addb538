#!/usr/bin/env bash
# Split one folder of clips over several machines (or GPUs): each runs `--shard I/N`.
#
# Every clip belongs to exactly one of the N shards, chosen by a hash of its path relative to
# IN_DIR (not by its position in a listing), so all machines agree without talking to each
# other, and adding clips later does not move the others to another shard. Requirements:
# IN_DIR and OUT_DIR on a file system all machines share (mount points may differ), and every
# machine given the same IN_DIR and the same N. Finished outputs are skipped, so re-running a
# shard (or the whole array) after a failure, preemption or time limit only does what is left.
#
# 1) SLURM job array, one task per shard (N = number of array tasks):
#
#      sbatch --array=0-7 examples/shard_over_machines.sh IN_DIR OUT_DIR MODEL
#
#    Task ids must be consecutive (no ":step" in --array, no lists); --shard is 1-based, so
#    the task id is shifted: $((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1)), which is
#    $((SLURM_ARRAY_TASK_ID + 1)) for --array=0-7.
#
# 2) GNU parallel over ssh hosts (one shard per host at a time), or over GPUs of one machine:
#
#      parallel --sshloginfile hosts.txt --jobs 1 --workdir . \
#          examples/shard_over_machines.sh IN_DIR OUT_DIR MODEL {} 8 ::: $(seq 8)
#      parallel --jobs 4 CUDA_VISIBLE_DEVICES='$(({%} - 1))' \
#          examples/shard_over_machines.sh IN_DIR OUT_DIR MODEL {} 4 ::: 1 2 3 4
#
# 3) By hand: examples/shard_over_machines.sh IN_DIR OUT_DIR MODEL 3 8   (shard 3 of 8)
#
# Each shard writes its own log, OUT_DIR/logs/shard-I-of-N.jsonl (appends are not atomic on
# NFS, so shards never share one). Overall progress: cat OUT_DIR/logs/*.jsonl.
#
#SBATCH --job-name=threpair-restore
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=threpair-%A_%a.out
set -euo pipefail

usage="usage: $0 IN_DIR OUT_DIR MODEL [I N]   (I N default to the SLURM array task)"
in_dir=${1:?$usage}
out_dir=${2:?$usage}
model=${3:?$usage}

if [ $# -ge 5 ]; then
    shard_i=$4
    shard_n=$5
elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    if [ "${SLURM_ARRAY_TASK_STEP:-1}" != 1 ]; then
        echo "$0: use a consecutive --array (e.g. 0-7), not a step" >&2
        exit 2
    fi
    shard_i=$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1))
    shard_n=$SLURM_ARRAY_TASK_COUNT
else
    echo "$usage" >&2
    exit 2
fi

mkdir -p "$out_dir/logs"
log="$out_dir/logs/shard-$shard_i-of-$shard_n.jsonl"

# exec: threpair itself receives the scheduler's SIGTERM (scancel, time limit), finishes
# cleaning up the file it was writing, logs it as interrupted and exits 130.
# Exit status: 0 ok, 1 some files of this shard failed (see the log), 2 bad arguments.
exec threpair restore "$in_dir" "$out_dir" --model "$model" \
    --shard "$shard_i/$shard_n" --log "$log" --quiet
