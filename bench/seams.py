"""Seam benchmark: is the generator's box found, and how strong is its border before/after.

    python bench/seams.py [--seconds 3]     # -> bench/results/seams.{json,md}, seams_sheet.jpg

Clips (first `--seconds` of each):
- anchor_de_20s and kim_source_7s made to look generated with the project's own degradation
  (evaluate.degrade_video: a 96-px render pasted as a hard box), whose box is known exactly:
  evaluate.generator_box of the real clip's face geometry;
- the same real clips untouched (no box: a box "found" there is a false positive);
- kim_wav2lip_8s, a real Wav2Lip output (box unknown: measured along the box found).

Figures: seams.edge_strength along the box edges, averaged over every 3rd frame: "step", the
luma jump in grey levels (mean over 8-px stretches of |mean of 4 px outside - mean of 4 px
inside|, the largest within +-3 px of the box), and "detail", the sharpness jump in octaves
(the same on log2 of the local detail). "none" is the input, the others the same frames
after seams.blend_seam with each method (what restore does after the paste, so with
`--model passthrough` this is the whole change); "restore" is the output of
`restore_video(..., Passthrough())` with the default settings; "real (floor)" the seam-free
real clip along the same box: real content crossing the edge scores too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, clip_path, write_results  # noqa: E402
from threpair import seams  # noqa: E402
from threpair.config import EncodeConfig, PasteConfig, PipelineConfig  # noqa: E402
from threpair.evaluate import degrade_video  # noqa: E402
from threpair.restore import Passthrough, analyze_faces, restore_video  # noqa: E402
from threpair.video import VideoWriter, probe, read_frames  # noqa: E402

METHODS = ("gradient", "feather", "ramp", "both")
FIGURES = ("step", "detail")
KNOWN = (-0.5, -0.5, 0.5, 0.58)  # evaluate.generator_box in seams' face-normalised units


def cut(src: Path, dst: Path, seconds: float) -> Path:
    info = probe(src)
    n = int(round(seconds * float(info.fps)))
    with VideoWriter(dst, info.width, info.height, info.fps, None, EncodeConfig(crf=14)) as w:
        for i, f in enumerate(read_frames(info)):
            if i >= n:
                break
            w.write(f)
    return dst


def measure(
    path: Path,
    boxes: np.ndarray,
    edges: tuple[str, ...],
    band: np.ndarray,
    every: int = 3,
    shot: int = -1,
    real: Path | None = None,
) -> tuple[dict, list]:
    """Mean edge strength per method over every `every`-th frame (and of the `real` clip's
    frames along the same boxes: the floor, what the figure is without a seam); the mean
    |change| the blend makes; picture crops of frame `shot` across each edge."""
    acc: dict[tuple[str, str], list[float]] = {}
    change: list[float] = []
    pics: list = []
    reals = read_frames(probe(real)) if real is not None else None
    for i, f in enumerate(read_frames(probe(path))):
        r = next(reals) if reals is not None else None
        if i % every or i >= len(boxes) or np.isnan(boxes[i, 0]):
            continue
        variants = {"none": f}
        for m in METHODS:
            variants[m] = seams.blend_seam(f, boxes[i], edges, float(band[i]), m)
        change.append(float(np.abs(variants["both"].astype(np.int16) - f).mean()))
        if r is not None:
            variants["real"] = r
        for m, g in variants.items():
            for fig in FIGURES:
                v = seams.edge_strength(g, boxes[i], edges, figure=fig)
                if "mean" in v:
                    acc.setdefault((fig, m), []).append(v["mean"])
        if i == shot:
            pics = [(e, {m: edge_crop(g, boxes[i], e) for m, g in variants.items()}) for e in edges]
    out = {k: float(np.mean(v)) for k, v in acc.items()}
    out[("change", "both")] = float(np.mean(change)) if change else float("nan")
    return out, pics


def edge_crop(frame: np.ndarray, box: np.ndarray, edge: str) -> np.ndarray:
    """A window across the middle of one box edge (0.6 x 0.3 box widths), turned so the edge
    runs horizontally with the inside below, resized to 360 x 180."""
    x0, y0, x1, y1 = box
    w = x1 - x0
    a, c = 0.3 * w, 0.15 * w
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    if edge in ("top", "bottom"):
        e = y0 if edge == "top" else y1
        win = frame[int(e - c) : int(e + c), int(mx - a) : int(mx + a)]
        win = win if edge == "top" else win[::-1]
    else:
        e = x0 if edge == "left" else x1
        win = frame[int(my - a) : int(my + a), int(e - c) : int(e + c)].transpose(1, 0, 2)
        win = win if edge == "left" else win[::-1]
    return cv2.resize(np.ascontiguousarray(win), (360, 180), interpolation=cv2.INTER_AREA)


def restored_strength(
    path: Path, boxes: np.ndarray, edges: tuple[str, ...], tmp: Path, seam: str = "auto"
) -> dict:
    """Both figures on the output of restore_video(..., Passthrough()), default settings
    but `seam` (the encoder changes fine detail too: compare "auto" with "off")."""
    out = tmp / f"{path.stem}_restored_{seam}.mp4"
    restore_video(path, out, Passthrough(), PipelineConfig(paste=PasteConfig(seam=seam)))
    vals: dict[str, list[float]] = {fig: [] for fig in FIGURES}
    for i, f in enumerate(read_frames(probe(out))):
        if i % 3 or i >= len(boxes) or np.isnan(boxes[i, 0]):
            continue
        for fig in FIGURES:
            v = seams.edge_strength(f, boxes[i], edges, figure=fig)
            if "mean" in v:
                vals[fig].append(v["mean"])
    return {fig: float(np.mean(v)) if v else float("nan") for fig, v in vals.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    cfg = PipelineConfig()
    rows = []
    sheets = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        cases = []
        for name in ("anchor_de_20s", "kim_source_7s"):
            real = cut(clip_path(name), tmp / f"{name}.mp4", args.seconds)
            fake = tmp / f"{name}_degraded.mp4"
            degrade_video(real, fake, cfg=cfg)
            cases.append((f"{name} degraded (known box)", fake, real))
            cases.append((f"{name} real (no box)", real, None))
        w2l = cut(clip_path("kim_wav2lip_8s"), tmp / "kim_wav2lip_8s.mp4", args.seconds)
        cases.append(("kim_wav2lip_8s (real Wav2Lip)", w2l, None))
        for label, path, known_from in cases:
            info = probe(path)
            geo = analyze_faces(info, cfg).geometry
            found = seams.find_box(info, geo, cfg)
            if known_from is not None:  # the box degrade_video pasted, from the real clip
                geo_known = analyze_faces(probe(known_from), cfg).geometry
                box = seams.SeamBox(True, KNOWN, seams.EDGES)
                boxes, edges = box.frame_boxes(geo_known, cfg.crop), seams.EDGES
                err = np.abs(np.subtract(found.box, KNOWN))
                box_err = {e: round(float(err[k]), 3) for k, e in enumerate(seams.EDGES)
                           if e in found.edges}  # fmt: skip
            else:
                boxes = found.frame_boxes(geo, cfg.crop)
                edges, box_err = found.edges, {}
            band = cfg.paste.seam_band * geo[:, 2] / cfg.crop.margin
            base = {
                "clip": label,
                "found": found.found,
                "edges found": ",".join(found.edges) or "-",
                "found - known (face boxes)": box_err or "-",
                "scores": " ".join(f"{e[0]}{found.scores[e]:.1f}" for e in seams.EDGES),
                "measured on": f"{'known' if known_from is not None else 'found'} box "
                + ",".join(edges),
            }
            if not edges:
                rows.append({**base, "figure": "-"})
                print(rows[-1], flush=True)
                continue
            shot = int(info.frame_count // 2 // 3 * 3)
            strength, pics = measure(path, boxes, edges, band, shot=shot, real=known_from)
            restored = restored_off = None
            if "degraded" in label or "Wav2Lip" in label:
                restored = restored_strength(path, boxes, edges, tmp)
                restored_off = restored_strength(path, boxes, edges, tmp, "off")
            sheets.append((label, pics))
            for fig in FIGURES:
                row = {**base, "figure": fig}
                row.update({m: strength[(fig, m)] for m in ("none", *METHODS)})
                if restored is not None and restored_off is not None:
                    row["restore"] = restored[fig]
                    row["restore --seam off"] = restored_off[fig]
                if (fig, "real") in strength:
                    row["real (floor)"] = strength[(fig, "real")]
                row["mean |change| both"] = strength[("change", "both")]
                rows.append(row)
                print(row, flush=True)
    if sheets:
        write_sheet(sheets, RESULTS / "seams_sheet.jpg")
    cols = ["clip", "found", "edges found", "found - known (face boxes)", "scores", "measured on"]
    cols += ["figure", "none", *METHODS, "restore --seam off", "restore", "real (floor)"]
    cols += ["mean |change| both"]
    write_results(
        "seams", rows, cols,
        f"Generator box seams, first {args.seconds:g} s of each clip. Figures "
        "(seams.edge_strength, mean over the edges measured and every 3rd frame): 'step' = "
        "luma jump across the box edge in grey levels, 'detail' = sharpness jump in octaves "
        "(log2 of local detail outside vs inside). Columns: none = input; gradient / feather / "
        "ramp / both = seams.blend_seam on the same frames (both = gradient + ramp, the "
        "default); restore = restore_video with --model passthrough, default settings (encoded, "
        "so compare it with restore --seam off, not with none); real "
        "(floor) = the seam-free real clip along the same box (what content alone scores); "
        "mean |change| = mean absolute pixel change of 'both' over the whole frame. scores: "
        "find_box peak per edge (l/t/r/b) in median-absolute units, threshold 2.5. "
        "`python bench/seams.py`",
    )  # fmt: skip


def write_sheet(sheets: list[tuple[str, list]], path: Path) -> None:
    """One row per (clip, edge): input, each method (and the real frame where known), all
    contrast-stretched with the input's range so a few grey levels of seam show. Each tile:
    the edge runs horizontally through the middle, the box's inside below."""
    rows = []
    for label, pics in sheets:
        for edge, tiles_by in pics:
            ref = tiles_by["none"].astype(np.float32)
            lo, hi = np.percentile(ref, 1), np.percentile(ref, 99)
            tiles = []
            for m in ("none", *METHODS, "real"):
                if m not in tiles_by:
                    continue
                t = np.clip((tiles_by[m].astype(np.float32) - lo) / max(hi - lo, 1) * 255, 0, 255)
                t = t.astype(np.uint8)[..., ::-1].copy()
                cv2.putText(t, "input" if m == "none" else m, (6, 20), cv2.FONT_HERSHEY_SIMPLEX,
                            0.6, (0, 255, 255), 2)  # fmt: skip
                tiles.append(np.pad(t, ((0, 0), (0, 4), (0, 0))))
            row = np.hstack(tiles)
            head = np.zeros((24, row.shape[1], 3), np.uint8)
            cv2.putText(head, f"{label}: {edge} edge", (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                        (255, 255, 255), 1)  # fmt: skip
            rows.append(np.vstack([head, row]))
    wmax = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, wmax - r.shape[1]), (0, 0))) for r in rows]
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])


if __name__ == "__main__":
    main()
