"""The network at the real scale: train it on one clip, compare it with the reference engine.

    nice -n 10 python bench/train_real_scale.py                 # CPU: small, band vs full, 20 min
    python bench/train_real_scale.py --preset base --device cuda --minutes 8 --variants band
    python bench/train_real_scale.py --preset tiny --minutes 0.2 --out-dir /tmp/x   # smoke test

The clip (anchor_de_20s) is cut by time: crops of the first 75% of its frames train, the last
25% validate (256-px crops, or the preset's resolution, framed as restore frames them). Each
variant (`band`: output = low band of the input + the decoder's high band; `full`: the
paper's re-generation) trains for `--minutes` of wall time; on a CPU the variants run side by
side, one core each (spawned processes), on a GPU one after the other. Training validates on
whole crops at the real degradation (the face box rendered at 96 px, generators.simulate).

Then, on `--val-crops` evenly spaced validation crops degraded the same way, every method is
scored against the real crops: the degraded input, the reference engine alone (bank: 64
training crops chosen by pose / mouth shape, no training), each trained network, and
`both` (the reference engine's output through the band network). Face and mouth PSNR, face
SSIM over the generator's box, the low band's PSNR against the input (how far the
generated mouth shape moved: 100 = not at all), and the temporal error over a contiguous
run of validation frames.

Outputs (in --out-dir, default bench/results): <name>.json, <name>.md, <name>.png (the
validation curve) and <name>_grid.jpg (degraded | references | networks | real).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import clip_path, machine  # noqa: E402

MARGIN = 1.5


def load_split(clip: Path, size: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) uint8 crops of `clip` at `size` px, split by time (restore framing)."""
    from threpair.config import CropConfig, PipelineConfig
    from threpair.data import extract_crops

    cs = extract_crops(clip, PipelineConfig(crop=CropConfig(size=size, margin=MARGIN)))
    train, val = cs.split(val_fraction)
    return np.array(train), np.array(val)  # writable copies of the memory map


def evenly(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def choose_bank(crops: np.ndarray, k: int) -> np.ndarray:
    """k crops chosen by farthest-point sampling on the identity's pose / mouth descriptor."""
    import cv2

    from threpair.identity import DESCRIPTOR_SIZE, descriptor, farthest_points

    size = DESCRIPTOR_SIZE
    desc = np.stack([descriptor(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA))
                     for c in crops])  # fmt: skip
    return crops[farthest_points(desc, k)]


# ----------------------------------------------------------------------------- one training


def train_variant(opts: dict[str, Any]) -> dict[str, Any]:
    """Train one variant (run in its own process on a CPU); returns its record."""
    import cv2
    import torch

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
        cv2.setNumThreads(opts["threads"])
    from threpair.generators import low_grid
    from threpair.model import SOVQAE, get_preset, num_parameters
    from threpair.train import TrainConfig, train

    base = get_preset(opts["preset"])
    gen_res = opts["gen_res"]
    grid = min(base.resolution, low_grid(gen_res if base.resolution >= 256 else
                                         round(gen_res * base.resolution / 256), MARGIN))
    cfg = replace(base, output=opts["variant"], band_grid=grid)
    train_crops, val_crops = load_split(Path(opts["clip"]), cfg.resolution, opts["val_fraction"])
    tc = TrainConfig(
        steps=opts["steps"], minutes=opts["minutes"], batch_size=opts["batch"],
        patch_size=opts["patch"], gen_res=gen_res if base.resolution >= 256 else None,
        margin=MARGIN, device=opts["device"], val_every=opts["val_every"],
        val_max_crops=opts["val_crops"], state_every=0, sample_rows=0, workers=opts["workers"],
        compile=opts["compile"], patience=opts["patience"], seed=0,
    )  # fmt: skip
    out = Path(opts["work"]) / f"{opts['name']}_{opts['variant']}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"[{opts['variant']}]"

    def on_progress(ev: dict) -> None:
        if ev["event"] == "start":
            print(f"{tag} start: {ev['parameters']:,} parameters, {ev['device']} {ev['amp']}, "
                  f"patches {ev['patch_size']} px, generator {ev['gen_res']} px", flush=True)
        elif ev["event"] == "val":
            print(f"{tag} {ev['elapsed'] / 60:5.2f} min step {int(ev['step'])}: face "
                  f"degraded {ev['psnr_degraded']:.2f} repaired {ev['psnr_repair']:.2f} "
                  f"(clean {ev['psnr_recon']:.2f}) dB", flush=True)  # fmt: skip
        elif ev["event"] == "plateau":
            print(f"{tag} plateau at step {ev['step']}: stopping", flush=True)

    t0 = time.perf_counter()
    res = train(train_crops, val_crops, cfg, tc, out, {"benchmark": opts["name"]},
                on_progress=on_progress)  # fmt: skip
    return {
        "variant": opts["variant"],
        "checkpoint": str(out),
        "steps": res.steps,
        "seconds": res.seconds,
        "wall_seconds": time.perf_counter() - t0,
        "stopped_by": res.stopped_by,
        "history": res.history,
        "theory": res.theory,
        "parameters": num_parameters(SOVQAE(cfg)),
        "model_config": cfg.to_dict(),
        "train_config": {k: v for k, v in tc.to_dict().items() if k != "loss"},
        "losses": res.losses,
        "gpu_peak_mib": (torch.cuda.max_memory_allocated() / 2**20
                         if torch.cuda.is_available() else None),  # fmt: skip
    }


# ----------------------------------------------------------------------------- evaluation


def run_network(path: str, crops: np.ndarray, device: str) -> np.ndarray:
    """uint8 crops through a trained checkpoint (whole crops, fp32 on CPU, autocast on CUDA)."""
    from threpair.inference import IdentityModel

    model = IdentityModel.load(path, device=device)
    return np.concatenate([model(crops[i : i + 8]) for i in range(0, len(crops), 8)])


def score(out: np.ndarray, real: np.ndarray, degraded: np.ndarray,
          gen_res: int) -> dict[str, float]:  # fmt: skip
    """Face / mouth PSNR, face SSIM, low-band PSNR vs the input (means over crops)."""
    import torch

    from threpair.bands import area_down
    from threpair.config import CropConfig
    from threpair.engines import region_masks
    from threpair.generators import low_grid
    from threpair.metrics import psnr, ssim

    size = real.shape[1]
    face, mouth = region_masks(size, CropConfig(size=size, margin=MARGIN))

    def mean(f: Any, mask: np.ndarray) -> float:
        return float(np.mean([min(f(a, b, mask=mask), 100.0) for a, b in zip(out, real)]))

    grid = min(size, low_grid(gen_res, MARGIN))
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double()  # noqa: E731
    mse = float((area_down(t(out), grid) - area_down(t(degraded), grid)).pow(2).mean())
    return {
        "face PSNR": mean(psnr, face),
        "mouth PSNR": mean(psnr, mouth),
        "face SSIM": mean(ssim, face),
        "low band PSNR vs input": min(100.0, 10 * np.log10(255.0**2 / max(mse, 1e-10))),
    }


def temporal(out: np.ndarray, real: np.ndarray) -> float:
    """Temporal error (flicker against the real crops) over the generator's box."""
    from threpair.config import CropConfig
    from threpair.engines import region_masks
    from threpair.metrics import temporal_error

    size = real.shape[1]
    face, _ = region_masks(size, CropConfig(size=size, margin=MARGIN))
    return temporal_error(out, real, mask=face)


def compare(records: list[dict], opts: dict[str, Any], out_dir: Path) -> list[dict]:
    """Every method on the same validation crops (see the module docstring)."""
    from threpair.config import CropConfig
    from threpair.engines.references import ReferenceEngine
    from threpair.generators import simulate

    size = records[0]["model_config"]["resolution"] if records else opts["resolution"]
    train, val = load_split(Path(opts["clip"]), size, opts["val_fraction"])
    gen_res = opts["gen_res"] if size >= 256 else round(opts["gen_res"] * size / 256)
    crop = CropConfig(size=size, margin=MARGIN)
    n = opts["val_crops"]
    idx = evenly(len(val), n)
    run_len = min(len(val), n)
    start = (len(val) - run_len) // 2
    # scored crops: the evenly spaced ones, then a contiguous run for the temporal error
    sel = np.concatenate([idx, np.arange(start, start + run_len)])
    real = val[sel]
    degraded = np.stack([simulate(c, gen_res, crop) for c in real])
    outputs: dict[str, np.ndarray] = {"degraded (generator input)": degraded}
    outputs.update(band_bounds(degraded, real, gen_res))
    seconds: dict[str, float] = {}
    if size % 32 == 0 and size >= 64:
        engine = ReferenceEngine(choose_bank(train, opts["bank"]), crop, gen_res,
                                 device=opts["device"] if opts["device"] != "auto" else "cpu")
        engine.prepare(size)
        t0 = time.perf_counter()
        refs = []
        for part in (degraded[: len(idx)], degraded[len(idx) :]):  # two sequences
            engine.reset()
            refs.append(np.concatenate([engine(part[i : i + 8]) for i in range(0, len(part), 8)]))
        outputs["references"] = np.concatenate(refs)
        seconds["references"] = (time.perf_counter() - t0) / len(degraded)
    for rec in records:
        t0 = time.perf_counter()
        key = f"sovqae {rec['variant']}"
        outputs[key] = run_network(rec["checkpoint"], degraded, opts["device"])
        seconds[key] = (time.perf_counter() - t0) / len(degraded)
        if rec["variant"] == "band" and "references" in outputs:
            outputs["both (references -> sovqae band)"] = run_network(
                rec["checkpoint"], outputs["references"], opts["device"]
            )
    scored = slice(0, len(idx))
    run = slice(len(idx), len(sel))
    rows = []
    for name, out in outputs.items():
        row: dict[str, Any] = {"method": name}
        row.update(score(out[scored], real[scored], degraded[scored], gen_res))
        row["temporal error"] = temporal(out[run], real[run])
        if name in seconds:
            row["ms/crop"] = 1000 * seconds[name]
        rows.append(row)
    write_grid(out_dir / f"{opts['name']}_grid.jpg", outputs, real, len(idx))
    return rows


def band_bounds(degraded: np.ndarray, real: np.ndarray, gen_res: int) -> dict[str, np.ndarray]:
    """What the band split starts from (the input's low band: an untrained band network) and
    its ceiling (that low band plus the real crop's high band: a perfect decoder)."""
    import torch

    from threpair.bands import low_pass
    from threpair.generators import low_grid

    grid = min(real.shape[1], low_grid(gen_res, MARGIN))
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double()  # noqa: E731
    u = lambda x: x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    low = low_pass(t(degraded), grid)
    ceiling = low + t(real) - low_pass(t(real), grid)
    return {f"band start: low band only ({grid} cells)": u(low),
            "band ceiling: low band + real high band": u(ceiling)}  # fmt: skip


def write_grid(path: Path, outputs: dict[str, np.ndarray], real: np.ndarray, n: int) -> None:
    """Rows of 4 evenly spaced validation crops: each method, then the real crop."""
    import cv2

    from threpair.demo import label

    rows = []
    for i in evenly(n, 4):
        tiles = [label(o[i], name.split(" (")[0].split(":")[0]) for name, o in outputs.items()
                 if not name.startswith("band ")]  # fmt: skip
        rows.append(np.concatenate([*tiles, label(real[i], "real")], 1))
    grid = np.ascontiguousarray(np.concatenate(rows, 0)[..., ::-1])
    cv2.imwrite(str(path), grid, [cv2.IMWRITE_JPEG_QUALITY, 92])


# ----------------------------------------------------------------------------- report


def write_report(name: str, out_dir: Path, records: list[dict], rows: list[dict],
                 opts: dict[str, Any]) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "options": opts,
            "command": "python bench/train_real_scale.py " + " ".join(sys.argv[1:])}  # fmt: skip
    slim = [{k: v for k, v in r.items() if k != "history"} | {"history": [
        {k: h.get(k) for k in ("step", "elapsed", "psnr_degraded", "psnr_repair", "psnr_recon",
                               "psnr_mouth_repair", "psnr_low_band", "usage_fraction")}
        for h in r["history"]]} for r in records]  # fmt: skip
    (out_dir / f"{name}.json").write_text(
        json.dumps({"meta": meta, "training": slim, "rows": rows}, indent=2, default=str)
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        h = r["history"]
        ax.plot([p["elapsed"] / 60 for p in h], [p["psnr_repair"] for p in h], marker="o", ms=3,
                label=f"sovqae {r['variant']} (EMA, val)")  # fmt: skip
    colors = {"degraded": "grey", "references": "tab:green", "band start": "tab:orange",
              "band ceiling": "tab:red"}  # fmt: skip
    for row in rows:
        key = next((k for k in colors if row["method"].startswith(k)), None)
        if key is not None:
            ax.axhline(row["face PSNR"], ls="--" if key in ("degraded", "references") else ":",
                       lw=1, color=colors[key], label=row["method"])  # fmt: skip
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("validation face PSNR (dB)")
    ax.set_title(f"{Path(opts['clip']).stem}: {opts['preset']} preset, {opts['device']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)
    cols = ["method", "face PSNR", "mouth PSNR", "face SSIM", "low band PSNR vs input",
            "temporal error", "ms/crop"]  # fmt: skip
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (  # noqa: E731
        f"{v:.2f}" if isinstance(v, float) else str(v))
    lines = [f"# {name}", "", f"Machine: {meta['machine']}, {meta['date']}.",
             f"Command: `{meta['command']}`.", ""]  # fmt: skip
    for r in records:
        th = r["theory"]
        lines.append(
            f"- `{r['variant']}`: preset {opts['preset']} ({r['parameters']:,} parameters), "
            f"{r['steps']} steps in {r['seconds'] / 60:.1f} min (stopped by {r['stopped_by']}), "
            f"patches {r['train_config']['patch_size'] or 'whole crops'}, batch "
            f"{r['train_config']['batch_size']}; theory on training crops: delta_min "
            f"{th.get('delta_min', float('nan')):.3f}, eps_max "
            f"{th.get('eps_max', float('nan')):.3f}, Lipschitz ~"
            f"{th.get('lipschitz', float('nan')):.2f}, NRoUB {th.get('nroub', float('nan')):.4f}"
        )
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    lines += ["", f"Curve: `{name}.png`; crops: `{name}_grid.jpg`.", ""]
    (out_dir / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", default="anchor_de_20s", help="a clip name or a video path")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--variants", default="band,full")
    ap.add_argument("--minutes", type=float, default=20.0, help="per variant")
    ap.add_argument("--steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=64, help="training patch size (0 = whole crops)")
    ap.add_argument("--gen-res", type=int, default=96, help="generator face resolution")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--val-crops", type=int, default=24)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--bank", type=int, default=64, help="reference crops for the engine")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="[default: 1 per CPU run]")
    ap.add_argument("--name", default="train_real_scale")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--work", type=Path, default=Path("/tmp/train_real_scale"))
    ap.add_argument("--compare-only", action="store_true",
                    help="score the networks the last run trained (their records in --work)")
    args = ap.parse_args(argv)
    import torch

    from threpair.model import get_preset

    clip = Path(args.clip) if Path(args.clip).suffix else clip_path(args.clip)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = device == "cpu"
    variants = [v for v in args.variants.split(",") if v]
    resolution = get_preset(args.preset).resolution
    opts = {
        "clip": str(clip), "preset": args.preset, "minutes": args.minutes, "steps": args.steps,
        "batch": args.batch, "patch": args.patch if args.patch < resolution else 0,
        "gen_res": args.gen_res, "val_fraction": args.val_fraction, "val_crops": args.val_crops,
        "val_every": args.val_every, "bank": args.bank, "device": device,
        "workers": args.workers, "compile": args.compile, "patience": args.patience,
        "threads": args.threads or (1 if cpu and len(variants) > 1 else None),
        "name": args.name, "work": str(args.work), "resolution": resolution,
    }  # fmt: skip
    load_split(clip, resolution, args.val_fraction)  # fill the crop cache once, before forking
    jobs = [{**opts, "variant": v} for v in variants]
    saved = args.work / f"{args.name}_records.json"
    if args.compare_only:
        records = json.loads(saved.read_text())
    elif cpu and len(jobs) > 1:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            records = pool.map(train_variant, jobs)
    else:
        records = [train_variant(j) for j in jobs]
    saved.write_text(json.dumps(records, default=str))
    rows = compare(records, opts, args.out_dir)
    write_report(args.name, args.out_dir, records, rows, opts)


if __name__ == "__main__":
    main()
