"""How far copying the bank's real detail can go: the reference engine against its bounds.

    python bench/quality_bound.py [--clips a,b] [--gen-res 96] [--name quality_bound]
    -> bench/results/quality_bound.{json,md}

Per clip, as bench/quality.py sets it up (the first 75% builds the identity, the last 25%
degraded by `threpair degrade`), 12 crops of the degraded video cut along the real video's
face track, scored at crop level (face box, its mouth part, and the face ellipse and mouth
that the frame-level scores use; PSNR gain over the degraded crops):
- engine: the reference engine with the restore defaults;
- keys' degradation: the same real crops degraded by `generators.simulate` (what the keys
  are made with) instead of by the video round trip, restored the same way: what a perfect
  model of the generator's degradation would add;
- oracle top 1 / top 4: the attention with a perfect matcher: each grid cell takes the
  bank patches nearest to the true detail (matched on the real crop itself, within the
  engine's search window), their high band added to the degraded crop with equal weights,
  no regression blended in. Patch copying from this bank cannot choose better matches; what
  the oracle leaves is what the bank does not hold (2026-12-05: the oracle's top 4 within
  0.6-1.0 dB of the engine on anchor_de_20s and obama_20s, below it on hill_8s, whose
  engine leans on the regression; the engine with keys degraded exactly like the input
  gains 0.3-0.9 dB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402
from bench.quality import crop_regions, gains, knob_frames, split_clip  # noqa: E402
from threpair.engines.attention import AttentionConfig, KeyBank, attend  # noqa: E402
from threpair.engines.references import ReferenceEngine, resize_crops  # noqa: E402
from threpair.evaluate import degrade_video  # noqa: E402
from threpair.generators import simulate  # noqa: E402
from threpair.identity import build_identity  # noqa: E402


def oracle(engine: ReferenceEngine, bank: np.ndarray, g: np.ndarray, r: np.ndarray, top_k: int):
    """Degraded crops `g` plus the bank's high band at the matches of the real crops `r`
    (matched on the real bank crops, equal weights over the top `top_k`)."""
    size = g.shape[1]
    crop = replace(engine.crop, size=size)
    real = resize_crops(bank, size)
    keys = np.stack([simulate(x, engine.gen_res, crop) for x in real])
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    # a huge temperature: equal weights over the top k
    cfg = replace(engine.cfg, top_k=top_k, refs=len(real), temperature=1e9)
    bank_real = KeyBank.build(nchw(real), nchw(real).to(torch.int16) - nchw(keys), cfg)
    outs = []
    for q, t in zip(nchw(g).float(), nchw(r).float()):
        high = attend(t, bank_real, cfg, engine._cell_rect(size)).high
        outs.append((q + engine._high_pass(high)).clamp(0, 255).round().to(torch.uint8))
    return torch.stack(outs).permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="anchor_de_20s,obama_20s,hill_8s")
    ap.add_argument("--gen-res", type=int, default=96)
    ap.add_argument("--name", default="quality_bound")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.clips.split(","):
            train, real = split_clip(name, tmp)
            gen = tmp / f"{name}_gen.mp4"
            ident = build_identity([train])
            degrade_video(real, gen, args.gen_res)
            g, r = knob_frames(ident, gen, real)
            size = g.shape[1]
            regions = crop_regions(ident, size)
            engine = ReferenceEngine(
                ident.bank, ident.crop, args.gen_res, AttentionConfig(), holdout=ident.holdout
            )
            engine.prepare(size)
            sim = np.stack([simulate(x, args.gen_res, replace(ident.crop, size=size)) for x in r])
            methods = {
                "engine": (engine(g), g),
                "engine, keys' degradation": (engine(sim), sim),
                "oracle top 1": (oracle(engine, ident.bank, g, r, 1), g),
                "oracle top 4": (oracle(engine, ident.bank, g, r, 4), g),
            }
            for label, (out, base) in methods.items():
                row = {"clip": name, "crop px": size, "method": label}
                row |= gains(out, base, r, regions)
                rows.append(row)
                print(row, flush=True)
    write_results(
        args.name, rows, list(rows[0]),
        f"PSNR gain (dB) over the degraded crops, 12 crops of each clip's last 25% degraded "
        f"at {args.gen_res} px (crop level, the real video's track); identity of the first "
        "75% (64-crop bank). Oracle: the attention alone with matches chosen on the real crop "
        "(a perfect matcher), equal weights. Face / mouth: the generator's box and its "
        "mouth part; ellipse: the regions the frame-level scores use. Command: "
        f"`python bench/quality_bound.py {' '.join(sys.argv[1:])}`.",
    )  # fmt: skip


if __name__ == "__main__":
    main()
