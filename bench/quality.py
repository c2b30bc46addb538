"""Quality at the real scale: the identity's engines on held-out footage degraded like Wav2Lip.

    python bench/quality.py [--clips a,b] [--gen-res 96] [--name quality]
    -> bench/results/quality.{json,md}, quality_sheet_<clip>.png, quality_knobs.{json,md}

Per clip: the first 75% (a stream copy cut) builds the identity (reference bank, no
training); the last 25% is made to look generated with `threpair degrade --gen-res 96` (the
face box rendered at 96 px, pasted back with a hard edge, as Wav2Lip does) and restored by
each method on the same frames; `threpair eval` scores every output against the real last
25% (face and mouth PSNR/SSIM, temporal error, mouth sharpness ratio to the real).

Methods: the degraded input; a generic sharpening baseline (unsharp mask on the same crops,
pasted the same way); the reference engine with the restore defaults (generator estimated,
no temporal smoothing), with `--variants` also with temporal smoothing 0.5. Every method
runs with the settings `threpair restore` uses for an identity (the generator's box found
and its seam blended; `config.identity_restore`). The SOVQAE is not run here: on a CPU it
does not reach the input at this scale (../shared/docs/design.md, "Facts measured").

The knob table varies the reference engine on crops of the degraded video (crop level, no
video I/O; scored on the generator's whole box, whose gains run higher than the frame-level
ones, and on the face ellipse and mouth that those score): fixed attention / regression
weights instead of the per-pixel blend, the facet prefilter (off by default), temperature,
references searched, top-k, search window, patch size, RGB matching, the 4-px grid
(`restore --match-grid 4`), the bank also searched rescaled by 0.98 and 1.02
(`references.RESCALED`, off by default).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, Timer, clip_path, write_results  # noqa: E402
from threpair.config import PipelineConfig, every_frame, identity_restore  # noqa: E402
from threpair.engines import EngineRequest, region_masks, validate_identity  # noqa: E402
from threpair.engines.attention import GRID_SETTINGS, AttentionConfig  # noqa: E402
from threpair.engines.references import RESCALED, ReferenceEngine  # noqa: E402
from threpair.evaluate import degrade_video, evaluate_videos, face_crops  # noqa: E402
from threpair.geometry import region_mask  # noqa: E402
from threpair.identity import build_identity  # noqa: E402
from threpair.metrics import psnr  # noqa: E402
from threpair.restore import analyze_faces, restore_video  # noqa: E402
from threpair.video import ffmpeg_exe, probe  # noqa: E402

CLIPS = ["anchor_de_20s", "obama_20s", "hill_8s", "kim_source_7s"]


class Sharpen:
    """The generic baseline: an unsharp mask (sigma 1.5 px, amount 1) on each crop."""

    resolution = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for c in crops:
            f = c.astype(np.float32)
            out.append(np.clip(2 * f - cv2.GaussianBlur(f, (0, 0), 1.5), 0, 255).round())
        return np.stack(out).astype(np.uint8)


def cut(src: Path, dst: Path, start: float | None, length: float | None) -> None:
    """A re-encoded time cut (crf 12, near lossless) with the audio copied."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-ss", f"{start}"] if start else []
    cmd += ["-i", str(src)] + (["-t", f"{length}"] if length else [])
    cmd += ["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-c:a", "copy", str(dst)]
    subprocess.run(cmd, check=True)


def split_clip(name: str, tmp: Path) -> tuple[Path, Path]:
    """(train, real): the clip's first 75% (builds the identity) and its last 25% (degraded
    and restored), cut into `tmp`."""
    src = clip_path(name)
    info = probe(src)
    dur = info.frame_count / float(info.fps)
    train, real = tmp / f"{name}_train.mp4", tmp / f"{name}_real.mp4"
    cut(src, train, None, 0.75 * dur)
    cut(src, real, 0.75 * dur, None)
    return train, real


def sheet(paths: list[Path], labels: list[str], out: Path, frames: int = 3) -> None:
    """Rows: frames spread over the clip; columns: the face crop (from the real video's
    track) of each video, 256 px, labelled."""
    info = probe(paths[-1])
    geo = analyze_faces(info, every_frame(PipelineConfig())).geometry
    idx = np.linspace(5, len(geo) - 5, frames).round().astype(int)
    cols = []
    for p, label in zip(paths, labels):
        crops = face_crops(probe(p), geo, 256)[idx]
        col = np.concatenate(list(crops), 0).copy()
        cv2.putText(col, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
        cols.append(col)
    cv2.imwrite(str(out), np.concatenate(cols, 1)[..., ::-1])


def knob_frames(ident, gen: Path, real: Path, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """`n` evenly spaced (generated, real) crop pairs at the identity's resolution, both cut
    along the real video's face track: what the engine sees in a restore, without video I/O."""
    cfg = every_frame(PipelineConfig(crop=ident.crop))
    info_r = probe(real)
    geometry = analyze_faces(info_r, cfg).geometry
    keep = np.full(len(geometry), np.nan)[:, None] * np.ones((1, 4))
    idx = np.linspace(0, len(geometry) - 1, n).round().astype(int)
    keep[idx] = geometry[idx]
    size = ident.resolution
    g = face_crops(probe(gen), keep, size)[idx]
    r = face_crops(info_r, keep, size)[idx]
    ok = ~np.isnan(geometry[idx, 0])
    return g[ok], r[ok]


def crop_regions(ident, size: int) -> dict[str, np.ndarray]:
    """bool (S, S) masks of a crop: the generator's box ("face"), its mouth part ("mouth"),
    and the face ellipse and mouth that the frame-level scores use ("... ellipse")."""
    c = replace(ident.crop, size=size)
    face, mouth = region_masks(size, c)
    feather = PipelineConfig().paste.feather
    regions = {"face": face, "mouth": mouth}
    return regions | {
        f"{n} ellipse": region_mask(size, n, c, feather) > 0.5 for n in ("face", "mouth")
    }


def gains(out: np.ndarray, degraded: np.ndarray, real: np.ndarray, regions: dict) -> dict:
    """Mean PSNR gain of `out` over `degraded` (both against `real`) per region."""
    score = lambda x, m: float(np.mean([psnr(a, b, mask=m) for a, b in zip(x, real)]))  # noqa: E731
    return {f"{n} gain dB": score(out, m) - score(degraded, m) for n, m in regions.items()}


def knobs(ident, gen_res: int, gen: Path, real: Path) -> list[dict]:
    """Face / mouth PSNR gains of engine settings on crops of the degraded video itself."""
    g, r = knob_frames(ident, gen, real)
    regions = crop_regions(ident, g.shape[1])
    rows = []
    base = AttentionConfig()
    variants = {
        "default": ({}, None, {}),
        "attention only": ({}, (1.0, 0.0), {}),
        "regression only": ({}, (0.0, 1.0), {}),
        "fixed blend 0.5 / 0.8": ({}, (0.5, 0.8), {}),
        "prefilter 0.2": ({}, None, {"prefilter": 0.2}),
        "temperature 2": ({"temperature": 2.0}, None, {}),
        "temperature 4.5": ({"temperature": 4.5}, None, {}),
        "refs 32": ({"refs": 32}, None, {}),
        "top_k 6": ({"top_k": 6}, None, {}),
        "window 1 (session 7)": ({"window": 1}, None, {}),
        "window 3": ({"window": 3}, None, {}),
        "patch 2": ({"patch": 2}, None, {}),
        "patch 4": ({"patch": 4}, None, {}),
        "RGB matching": ({"color": True}, None, {}),
        "4-px grid (--match-grid 4)": (GRID_SETTINGS[4], None, {}),
        "bank at 0.98 / 1 / 1.02 scale": ({}, None, {"scales": RESCALED}),
    }
    for label, (kw, blend, engine_kw) in variants.items():
        engine = ReferenceEngine(
            ident.bank, ident.crop, gen_res, replace(base, **kw), holdout=ident.holdout, **engine_kw
        )  # the blend calibrated on the identity's held-out crops, as in a restore
        if blend is not None:
            engine.blend = blend
        engine.prepare(g.shape[1])
        engine(g[:1])  # warm up: the first call allocates
        t0 = time.perf_counter()
        out = engine(g)
        ms = 1000 * (time.perf_counter() - t0) / len(g)
        rows.append({"setting": label, **gains(out, g, r, regions), "ms/crop": ms})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--gen-res", type=int, default=96)
    ap.add_argument("--name", default="quality")
    ap.add_argument("--knobs-clip", default="anchor_de_20s")
    ap.add_argument("--variants", action="store_true", help="also with temporal smoothing 0.5")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, knob_rows = [], []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.clips.split(","):
            train, real = split_clip(name, tmp)
            with Timer() as t_id:
                ident = build_identity([train])
                validate_identity(ident)  # as train-identity builds it
            gen = tmp / f"{name}_gen.mp4"
            degrade_video(real, gen, args.gen_res)
            outs = {"degraded": gen}
            methods = {
                "sharpen": (Sharpen(), {}),
                "references": (EngineRequest(ident), {}),
            }
            if args.variants:
                methods["references, smoothing 0.5"] = (
                    EngineRequest(ident, temporal_smooth=0.5),
                    {},
                )
            n_real = probe(real).frame_count
            seconds = {"degraded": 0.0}
            engines = {}
            for label, (model, _) in methods.items():
                out = tmp / f"{name}_{label.replace(' ', '_').replace(',', '')}.mp4"
                with Timer() as t:
                    s = restore_video(gen, out, model, cfg=identity_restore(PipelineConfig()))
                outs[label] = out
                seconds[label] = t.seconds / n_real
                engines[label] = s.engine
            for label, out in outs.items():
                ev = evaluate_videos(out, real).summary
                row = {"clip": name, "method": label, **{k: ev[k] for k in (
                    "psnr_face", "psnr_mouth", "ssim_face", "ssim_mouth", "temporal_error",
                    "sharpness_mouth")}, "s/frame": seconds[label]}  # fmt: skip
                e = engines.get(label, {})
                if e:
                    row["engine"] = f"{e['engine']} @ {e['crop_size']} px, gen {e['generator_res']}"
                    row["validated gain"] = e["gains"].get(e["engine"], {}).get("gain")
                row["identity s"] = t_id.seconds
                rows.append(row)
                print(row, flush=True)
            sheet([gen, outs["sharpen"], outs["references"], real],
                  ["generated", "sharpen", "references", "real"],
                  RESULTS / f"{args.name}_sheet_{name}.png")  # fmt: skip
            if name == args.knobs_clip:
                knob_rows = knobs(ident, args.gen_res, gen, real)
            save(args, rows, knob_rows)  # after every clip: a long run stopped early keeps some


def save(args: argparse.Namespace, rows: list[dict], knob_rows: list[dict]) -> None:
    cols = ["clip", "method", "psnr_face", "psnr_mouth", "ssim_face", "ssim_mouth",
            "temporal_error", "sharpness_mouth", "s/frame", "engine", "validated gain"]  # fmt: skip
    write_results(
        args.name, rows, cols,
        f"Held-out last 25% of each clip, degraded with `threpair degrade --gen-res "
        f"{args.gen_res}`, restored with the defaults (generator estimated) by an identity "
        "built from the first 75% (reference bank only, no training); scored by `threpair "
        "eval` against the real frames. sharpness_mouth: mouth sharpness / the real one's. "
        f"Command: `python bench/quality.py {' '.join(sys.argv[1:])}`.",
    )  # fmt: skip
    if knob_rows:
        write_results(
            f"{args.name}_knobs", knob_rows, list(knob_rows[0]),
            f"Reference engine settings on 12 crops of {args.knobs_clip}'s degraded last 25% "
            f"(generator {args.gen_res} px; crop level, cut along the real video's face track; "
            "gains over the degraded crops: the generator's box, its mouth part, and the face "
            "ellipse and mouth of the frame-level scores).",
        )  # fmt: skip


if __name__ == "__main__":
    main()
