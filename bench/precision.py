"""Network speed and agreement of fp32 vs bf16 autocast on this CPU (what --precision picks).

    python bench/precision.py --model CKPT [--model CKPT ...] [--batch 8] [--repeats 10]
    -> bench/results/precision.{json,md}

The encoder, quantizer and decoder of each checkpoint run on a batch of random crops, with 1
and 2 torch threads, in fp32 and under bf16 autocast (the code assignment stays fp32, as in
IdentityModel). ms/crop is the mean over `--repeats` batches after two warm-up batches;
PSNR compares the bf16 output with the fp32 output (0-255 scale). Only the network: the
pipeline around it is bench/speed.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402
from threpair.inference import IdentityModel, cpu_has_bf16  # noqa: E402


def run(model: IdentityModel, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        q = model.model.quantize(model.model.encode(x / 127.5 - 1))
        return (model.model.decode(q.z_q).float().clamp(-1, 1) + 1) * 127.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    rows = []
    for path in args.model:
        model = IdentityModel.load(path, device="cpu", precision="fp32")
        s = model.resolution
        x = torch.from_numpy(
            np.random.default_rng(0).integers(0, 256, (args.batch, 3, s, s)).astype(np.float32)
        )
        row: dict = {"model": path.stem, "px": s}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for bf16 in (False, True):
                for _ in range(2):
                    run(model, x, bf16)
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    run(model, x, bf16)
                ms = (time.perf_counter() - t0) / args.repeats / args.batch * 1000
                row[f"{'bf16' if bf16 else 'fp32'} ms/crop, {threads} thr"] = ms
            row[f"speed-up, {threads} thr"] = (
                row[f"fp32 ms/crop, {threads} thr"] / row[f"bf16 ms/crop, {threads} thr"]
            )
        mse = float(((run(model, x, False) - run(model, x, True)) ** 2).mean())
        row["bf16 vs fp32 PSNR"] = 10 * np.log10(255**2 / max(mse, 1e-12))
        rows.append(row)
        print(row, flush=True)
    note = (
        f"Network only (encode + fp32 code assignment + decode), batches of {args.batch} random "
        f"crops, mean of {args.repeats} batches after 2 warm-up; CPU has native bf16: "
        f"{cpu_has_bf16()}. Command: `python bench/precision.py "
        + " ".join(f"--model {p}" for p in args.model)
        + "`."
    )
    write_results("precision", rows, list(rows[0]), note)


if __name__ == "__main__":
    main()
