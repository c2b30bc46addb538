"""Does SOVQAE catch up with the plain autoencoder when both train longer?

    python bench/longer_training.py [--clip anchor_de_20s] [--minutes 15] [--work DIR]
    -> bench/results/longer_training.{json,md}

The quality benchmark (bench/quality.py) gives every model 4 minutes on one core, where the
plain autoencoder (no quantization) is ahead of SOVQAE on every clip. This runs the same
setup (same cut, degradation, 64-px model, one core per training, the two side by side) with
a longer budget for those two models only, and scores them on the same test frames with the
same pipeline (residual paste, confidence blending, fp32), without and with the default
temporal smoothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402
from bench.quality import (  # noqa: E402
    MAIN_RUNS,
    METHODS,
    cut_clip,
    load_train_crops,
    resolution,
    restore_eval,
    single_thread,
    train_run,
)

RUNS = ["plain_ae", "sovqae"]
SCORED = ["degraded", "plain_ae", "sovqae", "sovqae_s0.5"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="anchor_de_20s")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--work", default="/tmp/longer_training")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("THREPAIR_CACHE", str(work / "cache"))
    single_thread()
    t0 = time.time()
    cut_clip(args.clip, work)
    load_train_crops(args.clip, work, resolution())  # fill the crop cache once
    ctx = mp.get_context("spawn")
    with ctx.Pool(2, maxtasksperchild=1) as pool:
        jobs = [
            pool.apply_async(
                train_run,
                (args.clip, n, *MAIN_RUNS[n], args.minutes, str(work), 0, 100),
            )
            for n in RUNS
        ]
        trained = {n: j.get()["row"] for n, j in zip(RUNS, jobs)}
        jobs = [
            pool.apply_async(restore_eval, (args.clip, m, METHODS[m], str(work), {}))
            for m in SCORED
        ]
        scored = {m: j.get() for m, j in zip(SCORED, jobs)}
    rows = []
    for m in SCORED:
        s = scored[m]["summary"]
        run = METHODS[m].get("run")
        rows.append({
            "method": m,
            "steps": trained[run]["steps"] if run else "",
            "val_psnr_repair": trained[run]["val_psnr_repair"] if run else "",
            "psnr_face": s["psnr_face"], "ssim_face": s["ssim_face"],
            "psnr_mouth": s["psnr_mouth"], "temporal_error": s["temporal_error"],
        })  # fmt: skip
    note = (
        f"{args.clip}, the quality benchmark's setup (bench/quality.py: first 75% trains, last "
        f"25% degraded to a 16-px face box and repaired; 64-px cpu64 model; restores in fp32) "
        f"with {args.minutes:g} min of training per model instead of 4, on one core each, the "
        f"two side by side. sovqae_s0.5 = the same checkpoint with temporal smoothing 0.5 (the "
        f"CLI default). Wall time {(time.time() - t0) / 60:.0f} min. Command: `python "
        f"bench/longer_training.py --clip {args.clip} --minutes {args.minutes:g}`."
    )
    cols = ["method", "steps", "val_psnr_repair", "psnr_face", "ssim_face", "psnr_mouth",
            "temporal_error"]  # fmt: skip
    write_results("longer_training", rows, cols, note)
    (work / "rows.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
