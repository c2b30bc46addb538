"""The CPU-scale training benchmark: which training recipe repairs generator-blurred faces best
for a fixed wall-clock budget.

    python bench/train_cpu.py                      # 5 variants x 8 min, 2 at a time (~27 min)
    python bench/train_cpu.py --minutes 0.3 --variants sovqae,no_reg   # smoke test

On anchor_de_20s (first 75% of frames train, last 25% validate, split by time) each variant
trains a 64-px model for `--minutes` of wall time on one core (torch.set_num_threads(1)),
`--jobs` runs side by side in spawned processes. The generator is simulated at 0.375x the model
resolution (24 px for 64 px): the same ratio as Wav2Lip's 96-px face inside a 256-px model.

Per run: the validation history (PSNR vs elapsed seconds, on up to 64 evenly spaced validation
crops) and, with the final EMA checkpoint on ALL validation crops, PSNR degraded / repaired /
clean reconstruction vs real, SSIM, the mouth-region sharpness ratio vs real, codebook usage,
and the theory numbers (delta_min, eps_max, Lipschitz estimate, NRoUB) of the training result.

Outputs: bench/results/train_cpu.{json,md,png} and train_cpu_samples.png (sovqae:
degraded | restored | real). Checkpoints and per-run JSON go to --work (default /tmp/train_cpu).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, clip_path, machine, write_results  # noqa: E402

CLIP = "anchor_de_20s"
VAL_FRACTION = 0.25
GEN_RATIO = 96 / 256  # Wav2Lip's face resolution relative to a 256-px model
# mouth region of a crop, fractions of its side (x0, y0, x1, y1); see mouth_check.png
MOUTH_BOX = (0.32, 0.56, 0.68, 0.80)  # lips and chin in this crop framing

# name -> (model preset, ModelConfig overrides, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "sovqae": ("cpu64", {}, {}),  # degradation-aware inputs, min-distance regularizer, f=4
    "clean_only": ("cpu64", {}, {"degrade_inputs": False}),  # the paper's way
    "no_reg": ("cpu64", {"reg_weight": 0.0}, {}),  # plain VQ-AE codebook
    "f8": ("cpu64", {"channel_mult": (1, 2, 2, 2)}, {}),  # one more downsampling level
    "plain_ae": ("cpu64", {"use_vq": False}, {}),  # no quantization, same network
}


def mouth_mask(size: int) -> np.ndarray:
    x0, y0, x1, y1 = (round(v * size) for v in MOUTH_BOX)
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def load_split(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from threpair.config import CropConfig, PipelineConfig
    from threpair.data import extract_crops

    cs = extract_crops(clip_path(CLIP), PipelineConfig(crop=CropConfig(size=resolution)))
    train, val = cs.split(VAL_FRACTION)
    return np.array(train), np.array(val)  # writable copies of the memory map


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """Drop NaN / inf so the JSON stays strict and the table shows blanks."""
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


# ----------------------------------------------------------------------------- one run (child)


def run_variant(name: str, minutes: float, work: str, val_every: int, seed: int) -> dict:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    from threpair import checkpoint
    from threpair.model import get_preset, num_parameters
    from threpair.train import TrainConfig, train

    preset, m_over, t_over = VARIANTS[name]
    mcfg = replace(get_preset(preset), **m_over)
    gen_res = round(mcfg.resolution * GEN_RATIO)
    tcfg = TrainConfig(
        steps=10**9, minutes=minutes, seed=seed, gen_res=gen_res, val_every=val_every,
        sample_rows=0, state_every=0, device="cpu", **t_over,
    )  # fmt: skip
    train_crops, val_crops = load_split(mcfg.resolution)
    out = Path(work) / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)

    history: list[dict[str, float]] = []
    t0 = [time.perf_counter()]
    cpu0 = [time.process_time()]  # this process's CPU time: shows contention from other jobs
    last_log = [-1.0, 0.0]  # (step, elapsed) of the last log event

    def on_progress(ev: dict) -> None:
        if ev["event"] == "log":
            last_log[:] = [float(ev["step"]), ev["elapsed"]]
        elif ev["event"] == "start":
            t0[0] = time.perf_counter()
            cpu0[0] = time.process_time()
            print(f"[{name}] start: {ev['parameters']:,} parameters, gen {ev['gen_res']} px, "
                  f"losses: {'; '.join(ev['losses'])}", flush=True)  # fmt: skip
        elif ev["event"] == "val":
            # the training clock of the validated step (from the log event of that step)
            s = last_log[1] if last_log[0] == ev["step"] else time.perf_counter() - t0[0]
            keys = ("step", "psnr_degraded", "psnr_repair", "psnr_recon", "codes_used")
            cpu = time.process_time() - cpu0[0]
            point = {"seconds": s, "cpu_seconds": cpu}
            history.append({**point, **{k: ev[k] for k in keys if k in ev}})
            print(f"[{name}] {s / 60:5.2f} min step {int(ev['step'])}: degraded "
                  f"{ev['psnr_degraded']:.2f} repair {ev['psnr_repair']:.2f} recon "
                  f"{ev['psnr_recon']:.2f} dB", flush=True)  # fmt: skip

    res = train(
        train_crops, val_crops, mcfg, tcfg, out,
        {"benchmark": "train_cpu", "variant": name}, on_progress=on_progress,
    )  # fmt: skip
    cpu_share = (time.process_time() - cpu0[0]) / max(time.perf_counter() - t0[0], 1e-9)

    if history and history[-1]["step"] == res.steps:
        history[-1]["seconds"] = res.seconds  # the final validation: at the end of the budget
    final = evaluate_final(checkpoint.load(out)[0], val_crops, gen_res)
    th = res.theory
    row = {
        "variant": name,
        "preset": preset,
        "f": mcfg.downsample_factor,
        "params M": num_parameters(checkpoint.load(out)[0]) / 1e6,
        "steps": res.steps,
        "steps/s": res.steps / res.seconds,
        "CPU share": cpu_share,  # CPU time / wall time of the run; < ~0.95: the core was shared
        **final,
        "delta_min": th.get("delta_min", float("nan")),
        "eps_max": th.get("eps_max", float("nan")),
        "L": th.get("lipschitz", float("nan")),
        "NRoUB": th.get("nroub", float("nan")),
    }
    result = {
        "row": _finite(row),
        "history": history,
        "theory": _finite(th),
        "seconds": res.seconds,
        "model_config": mcfg.to_dict(),
        "train_config": {k: v for k, v in tcfg.to_dict().items() if k != "loss"},
        "losses": res.losses,
        "gen_res": gen_res,
    }
    (Path(work) / f"{name}.json").write_text(json.dumps(result, indent=2))
    if name == "sovqae":
        np.savez_compressed(
            Path(work) / "sovqae_samples.npz", **final_samples(out, val_crops, gen_res)
        )
    return result


def _model_io(model: Any, crops: np.ndarray, batch: int = 32) -> tuple[np.ndarray, Any]:
    """uint8 crops through the model -> (uint8 outputs, code indices or None)."""
    import torch

    from threpair.train import to_tensor, to_uint8

    outs, idx = [], []
    with torch.no_grad():
        for s in range(0, len(crops), batch):
            y, q = model(to_tensor(crops[s : s + batch], torch.device("cpu")))
            outs.append(to_uint8(y))
            if q.indices is not None:
                idx.append(q.indices.flatten())
    return np.concatenate(outs), (torch.cat(idx) if idx else None)


def evaluate_final(model: Any, val: np.ndarray, gen_res: int) -> dict[str, float]:
    """Metrics on ALL validation crops (means of per-crop values)."""
    from threpair.degrade import simulate_generator
    from threpair.metrics import psnr, sharpness_ratio, ssim
    from threpair.quantize import codebook_usage

    degraded = np.stack([simulate_generator(c, gen_res) for c in val])
    restored, _ = _model_io(model, degraded)
    recon, idx = _model_io(model, val)
    mm = mouth_mask(val.shape[1])

    def mean(f: Any, a: np.ndarray) -> float:
        return float(np.mean([f(x, r) for x, r in zip(a, val, strict=True)]))

    out = {
        "val crops": len(val),
        "PSNR degraded": mean(psnr, degraded),
        "PSNR repaired": mean(psnr, restored),
        "PSNR recon": mean(psnr, recon),
        "SSIM degraded": mean(ssim, degraded),
        "SSIM repaired": mean(ssim, restored),
        "mouth sharp degraded": mean(lambda x, r: sharpness_ratio(x, r, mm), degraded),
        "mouth sharp repaired": mean(lambda x, r: sharpness_ratio(x, r, mm), restored),
    }
    if idx is not None:
        out["codes used"] = int(codebook_usage(idx, model.cfg.codebook_size)["codes_used"])
    return out


def final_samples(
    ckpt: Path, val: np.ndarray, gen_res: int, rows: int = 6
) -> dict[str, np.ndarray]:
    from threpair import checkpoint
    from threpair.degrade import simulate_generator

    sel = np.unique(np.linspace(0, len(val) - 1, rows).round().astype(int))
    real = val[sel]
    degraded = np.stack([simulate_generator(c, gen_res) for c in real])
    restored, _ = _model_io(checkpoint.load(ckpt)[0], degraded)
    return {"degraded": degraded, "restored": restored, "real": real, "index": sel}


# ----------------------------------------------------------------------------- figures


def plot_history(results: dict[str, dict], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    deg = [p["psnr_degraded"] for r in results.values() for p in r["history"]]
    for ax, xkey, xlabel in (
        (axes[0], "seconds", "training wall time (minutes, 1 core per run)"),
        (axes[1], "step", "training steps (batch 8)"),
    ):
        for name, r in results.items():
            h = r["history"]
            x = [p[xkey] / 60 if xkey == "seconds" else p[xkey] for p in h]
            ax.plot(x, [p["psnr_repair"] for p in h], marker="o", ms=3, label=name)
        if deg:
            ax.axhline(float(np.mean(deg)), color="k", ls="--", lw=1,
                       label=f"degraded input ({np.mean(deg):.2f} dB)")  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation PSNR, repaired vs real (dB)")
    axes[0].legend()
    fig.suptitle(f"{CLIP}: 64-px model, generator simulated at 24 px, {minutes:g} min per run "
                 "(validation: 64 evenly spaced crops of the last 25%)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(s: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(s["real"])
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n))
    for i in range(n):
        for j, key in enumerate(("degraded", "restored", "real")):
            ax = axes[i, j]
            ax.imshow(s[key][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(key)
        axes[i, 0].set_ylabel(f"val #{int(s['index'][i])}")
    fig.suptitle("sovqae, validation crops (64 px; degraded = generator at 24 px)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mouth_check(val: np.ndarray, path: Path) -> None:
    import cv2

    size = val.shape[1]
    x0, y0, x1, y1 = (round(v * size) for v in MOUTH_BOX)
    tiles = []
    for i in np.linspace(0, len(val) - 1, 4).round().astype(int):
        t = cv2.resize(np.ascontiguousarray(val[i]), None, fx=4, fy=4,
                       interpolation=cv2.INTER_NEAREST)  # fmt: skip
        cv2.rectangle(t, (4 * x0, 4 * y0), (4 * x1 - 1, 4 * y1 - 1), (255, 0, 0), 1)
        tiles.append(t)
    cv2.imwrite(str(path), np.concatenate(tiles, 1)[..., ::-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (1 core each)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/train_cpu", help="checkpoints and scratch")
    ap.add_argument(
        "--report-only", action="store_true",
        help="no training: rewrite the results from the runs saved in --work",
    )  # fmt: skip
    args = ap.parse_args()
    work = Path(args.work)
    if args.report_only:
        report(work)
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    work.mkdir(parents=True, exist_ok=True)

    # extract (and cache) the crops once before the workers start
    _, val = load_split(get_resolution())
    mouth_check(val, work / "mouth_check.png")

    ctx = mp.get_context("spawn")
    t_start = time.perf_counter()
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        jobs = [
            pool.apply_async(run_variant, (n, args.minutes, str(work), args.val_every, args.seed))
            for n in names
        ]
        for n, job in zip(names, jobs, strict=True):
            job.get()  # each run also saved <work>/<name>.json
            print(f"[{n}] done", flush=True)
    summary = {
        "names": names, "minutes": args.minutes, "jobs": args.jobs,
        "val_every": args.val_every, "wall_seconds": time.perf_counter() - t_start,
        "val_crops": len(val),
    }  # fmt: skip
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    report(work)


def report(work: Path) -> None:
    """Results, curves and sample grid from the runs saved in `work`."""
    sm = json.loads((work / "summary.json").read_text())
    names, minutes, jobs = sm["names"], sm["minutes"], sm["jobs"]
    results = {n: json.loads((work / f"{n}.json").read_text()) for n in names}

    import torch

    torch.set_num_threads(1)  # what each run had; machine() reports it
    plot_history(results, RESULTS / "train_cpu.png", minutes)
    if "sovqae" in results:
        s = dict(np.load(work / "sovqae_samples.npz"))
        plot_samples(s, RESULTS / "train_cpu_samples.png")

    # equal training progress: the last validated step that every run reached
    common = min(
        max((int(p["step"]) for p in r["history"] if p["step"] % sm["val_every"] == 0), default=0)
        for r in results.values()
    )
    at_step = f"repair @{common} steps"
    rows = []
    for n in names:
        row = dict(results[n]["row"])
        hit = [p for p in results[n]["history"] if int(p["step"]) == common]
        if hit:
            row[at_step] = hit[0]["psnr_repair"]
        rows.append(row)
    columns = [
        "variant", "f", "params M", "steps", "steps/s", "CPU share", at_step, "PSNR degraded",
        "PSNR repaired", "PSNR recon", "SSIM degraded", "SSIM repaired", "mouth sharp degraded",
        "mouth sharp repaired", "codes used", "delta_min", "eps_max", "L", "NRoUB",
    ]  # fmt: skip
    default = (minutes, jobs, names) == (8.0, 2, list(VARIANTS))
    cmd = "python bench/train_cpu.py" + (
        "" if default else f" --minutes {minutes:g} --jobs {jobs} --variants {','.join(names)}"
    )
    note = (
        f"CPU-scale training benchmark on {CLIP} (first 75% of frames train, last 25% = "
        f"{sm['val_crops']} crops validate, split by time). Scale: a 64-px model (preset cpu64, "
        "f=4 unless noted) against a generator simulated at 24 px (0.375x): the CPU stand-in "
        "with the same ratio as Wav2Lip's 96-px face inside a 256-px model; not the real "
        f"scale. Budget: {minutes:g} min of training wall time per run, one core each "
        f"(torch.set_num_threads(1)), {jobs} runs side by side ({sm['wall_seconds'] / 60:.1f} "
        f"min wall in all) on {machine()}; batch 8, lr 5e-4, FFT loss in place of the "
        "perceptual loss (no VGG weights), no GAN. Variants: sovqae = degradation-aware inputs "
        "+ min-distance regularizer (delta 0.5 on unit-norm latents); clean_only = clean crops "
        "in (the paper's way); no_reg = reg_weight 0; f8 = one more downsampling level (8x8 "
        "latents); plain_ae = no quantization. Metrics on ALL validation crops with the final "
        "EMA checkpoint, means of per-crop values: PSNR / SSIM (luma) vs the real crop of the "
        "degraded input, the repair (degraded -> model) and the clean reconstruction (real -> "
        f"model); mouth sharp = Laplacian-variance ratio vs real in the mouth box x "
        f"{MOUTH_BOX[0]}-{MOUTH_BOX[2]}, y {MOUTH_BOX[1]}-{MOUTH_BOX[3]} of the crop (1 = as "
        "sharp as real); codes used on the clean validation crops (of 512); delta_min, "
        "eps_max, L (empirical encoder Lipschitz) and NRoUB = (delta_min/2 - eps_max)/L from "
        "the training crops (negative: no robustness guarantee). CPU share = CPU time / wall "
        "time of a run: below about 0.95 other processes shared its core, so it got fewer "
        f"steps for its minutes. {at_step}: repair PSNR at the same training progress for all "
        "runs (the EMA model at that step, on the 64 evenly spaced validation crops of the "
        "in-training validation), which does not depend on the machine's load: training is "
        "deterministic, so a step's numbers repeat exactly. Curves: "
        "bench/results/train_cpu.png; samples: train_cpu_samples.png. Regenerate with: "
        f"`{cmd}` (about {math.ceil(len(names) / jobs) * (minutes + 1):.0f} min; "
        "`--report-only` rewrites these files from the runs kept in /tmp/train_cpu)."
    )
    write_results("train_cpu", rows, columns, note)
    # histories and configs go into the JSON next to the rows
    path = RESULTS / "train_cpu.json"
    data = json.loads(path.read_text())
    keep = ("history", "theory", "seconds", "model_config", "train_config", "losses", "gen_res")
    data["runs"] = {n: {k: r[k] for k in keep} for n, r in results.items()}
    path.write_text(json.dumps(data, indent=2))


def get_resolution() -> int:
    from threpair.model import get_preset

    res = {get_preset(p).resolution for p, _, _ in VARIANTS.values()}
    assert len(res) == 1
    return res.pop()


if __name__ == "__main__":
    main()
