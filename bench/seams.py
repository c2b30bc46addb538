"""Seam benchmark: is the generator's box found, and how strong is its border before/after.

    python bench/seams.py [--seconds 3]     # -> bench/results/seams.{json,md}, seams_*.png

Clips (first `--seconds` of each):
- anchor_de_20s and kim_source_7s made to look generated with the project's own degradation
  (evaluate.degrade_video: a 96-px render pasted as a hard box), whose box is known exactly:
  evaluate.generator_box of the real clip's face geometry;
- the same real clips untouched (no box: a box "found" there is a false positive);
- kim_wav2lip_8s, a real Wav2Lip output (box unknown: measured along the box found).

Figure: seams.edge_strength, the luma step across each box edge in grey levels (mean over
8-px stretches along the edge of |mean of 4 px outside - mean of 4 px inside|, the largest
within +-3 px of the box), averaged over every 3rd frame; "none" is the input, the others
the same frames after seams.blend_seam with each method (what restore does after the paste,
so with `--model passthrough` this is the whole change). "restore" is the output of
`restore_video(..., Passthrough())` with the default settings, measured the same way.
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
from threpair.config import EncodeConfig, PipelineConfig  # noqa: E402
from threpair.evaluate import degrade_video  # noqa: E402
from threpair.restore import Passthrough, analyze_faces, restore_video  # noqa: E402
from threpair.video import VideoWriter, probe, read_frames  # noqa: E402

METHODS = ("gradient", "feather", "both")
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


def measure(path: Path, boxes: np.ndarray, edges: tuple[str, ...], band: np.ndarray,
            every: int = 3, shots: list[int] | None = None) -> tuple[dict, dict]:  # fmt: skip
    """Mean edge strength per method over every `every`-th frame, and picture crops."""
    acc: dict[str, list[float]] = {m: [] for m in ("none", *METHODS)}
    pics: dict[str, np.ndarray] = {}
    for i, f in enumerate(read_frames(probe(path))):
        if i % every or i >= len(boxes) or np.isnan(boxes[i, 0]):
            continue
        variants = {"none": f}
        for m in METHODS:
            variants[m] = seams.blend_seam(f, boxes[i], edges, float(band[i]), m)
        for m, g in variants.items():
            s = seams.edge_strength(g, boxes[i], edges)
            if "mean" in s:
                acc[m].append(s["mean"])
        if shots and i == shots[0]:
            pics = {m: zoom(g, boxes[i]) for m, g in variants.items()}
    return {m: float(np.mean(v)) if v else float("nan") for m, v in acc.items()}, pics


def zoom(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box plus a margin, contrast-stretched so a few grey levels of seam show."""
    x0, y0, x1, y1 = box
    m = 0.15 * (x1 - x0)
    h, w = frame.shape[:2]
    a, b = int(max(0, x0 - m)), int(min(w, x1 + m))
    c, d = int(max(0, y0 - m)), int(min(h, y1 + m))
    crop = frame[c:d, a:b].astype(np.float32)
    lo, hi = np.percentile(crop, 1), np.percentile(crop, 99)
    crop = np.clip((crop - lo) / max(hi - lo, 1) * 255, 0, 255).astype(np.uint8)
    return cv2.resize(crop, (320, int(320 * crop.shape[0] / crop.shape[1])))


def restored_strength(path: Path, boxes: np.ndarray, edges: tuple[str, ...], tmp: Path) -> tuple:
    out = tmp / f"{path.stem}_restored.mp4"
    summary = restore_video(path, out, Passthrough(), PipelineConfig())
    vals = []
    for i, f in enumerate(read_frames(probe(out))):
        if i % 3 or i >= len(boxes) or np.isnan(boxes[i, 0]):
            continue
        s = seams.edge_strength(f, boxes[i], edges)
        if "mean" in s:
            vals.append(s["mean"])
    return float(np.mean(vals)) if vals else float("nan"), summary


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
            row = {
                "clip": label,
                "found": found.found,
                "edges found": ",".join(found.edges) or "-",
                "found - known (face boxes)": box_err or "-",
                "scores": " ".join(f"{e[0]}{found.scores[e]:.1f}" for e in seams.EDGES),
                "measured on": "known box" if known_from is not None else "found box",
            }
            if edges:
                shot = int(info.frame_count // 2 // 3 * 3)
                strength, pics = measure(path, boxes, edges, band, shots=[shot])
                row.update({f"step {m}": v for m, v in strength.items()})
                if "degraded" in label or "Wav2Lip" in label:
                    row["step restore"], _ = restored_strength(path, boxes, edges, tmp)
                    sheets.append((label, pics))
            rows.append(row)
            print(row, flush=True)
    if sheets:
        write_sheet(sheets, RESULTS / "seams_sheet.png")
    cols = ["clip", "found", "edges found", "found - known (face boxes)", "scores", "measured on",
            "step none", "step gradient", "step feather", "step both", "step restore"]  # fmt: skip
    write_results(
        "seams", rows, cols,
        f"Generator box seams, first {args.seconds:g} s of each clip. 'step': luma step across "
        "the box edges in grey levels (seams.edge_strength, mean over edges and every 3rd "
        "frame); 'none' = input, gradient/feather/both = seams.blend_seam on the same frames, "
        "'restore' = restore_video with --model passthrough and default settings. scores: "
        "find_box peak per edge (l/t/r/b) in median-absolute units, threshold 2.5. "
        "`python bench/seams.py`",
    )  # fmt: skip


def write_sheet(sheets: list[tuple[str, dict]], path: Path) -> None:
    """One row per clip: input and each method, contrast-stretched around the box."""
    rows = []
    for label, pics in sheets:
        tiles = []
        for m in ("none", *METHODS):
            t = pics[m][..., ::-1].copy()
            cv2.putText(t, m if m != "none" else "input", (6, 20), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6, (0, 255, 255), 2)  # fmt: skip
            tiles.append(t)
        hmax = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, hmax - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
        row = np.hstack(tiles)
        head = np.zeros((26, row.shape[1], 3), np.uint8)
        cv2.putText(head, label, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        rows.append(np.vstack([head, row]))
    wmax = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, wmax - r.shape[1]), (0, 0))) for r in rows]
    cv2.imwrite(str(path), np.vstack(rows))


if __name__ == "__main__":
    main()
