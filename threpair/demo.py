"""`threpair demo`: the main job on a built-in example, offline, in a few minutes of CPU.

The example is synthesized from a real face photo that scikit-image ships
(`skimage.data.astronaut()`, a public-domain NASA portrait) with head motion, mouth movement
and a sine tone as audio. The first 75% of it plays the person's real footage: the identity
(its reference bank, no training) is built from it. The last 25% is made to look like Wav2Lip
output (the face box rendered at 96 px and pasted back with a hard seam) and then repaired
with the defaults. The demo writes the clips, a side-by-side video (generated | repaired |
real) and a contact sheet, and measures the face PSNR of the generated and the repaired
part against the real one.

Scale: the real one: a 960x540 frame, the face at its own resolution, a 96-px generator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from threpair.config import EncodeConfig, PipelineConfig, identity_restore
from threpair.engines import EngineRequest, validate_identity
from threpair.evaluate import degrade_video, evaluate_videos
from threpair.generators import GENERATORS
from threpair.identity import build_identity
from threpair.restore import ProgressFn, restore_video
from threpair.synthetic import talking_head_frames
from threpair.video import VideoWriter, probe, read_frames, write_tone

FPS = 25
SIZE = (960, 540)
TRAIN_SHARE = 0.75


def write_example_clip(
    path: Path,
    seconds: float = 12.0,
    size: tuple[int, int] = SIZE,
    fps: int = FPS,
    seed: int = 0,
    start: int = 0,
    stop: int | None = None,
) -> Path:
    """Write frames [start, stop) of the synthetic talking-head example, with a tone as audio."""
    n = int(round(seconds * fps))
    stop = n if stop is None else stop
    tone = write_tone(path.with_name(path.stem + "_tone.m4a"), (stop - start) / fps)
    try:
        with VideoWriter(path, size[0], size[1], Fraction(fps), tone, EncodeConfig(crf=14)) as w:
            frames = talking_head_frames(n, size, float(fps), seed)
            for frame in islice(frames, start, stop):  # frames after `stop` are never rendered
                w.write(frame)
    finally:
        tone.unlink(missing_ok=True)
    return path


@dataclass
class DemoResult:
    real_footage: Path
    generated: Path
    repaired: Path
    real_test: Path
    side_by_side: Path
    contact_sheet: Path
    identity: Path
    psnr_generated: float
    psnr_repaired: float
    build_seconds: float
    engine: dict


def side_by_side(paths: list[Path], out: Path, labels: list[str]) -> Path:
    """Stack videos of the same size horizontally (audio from the first), labelled."""
    infos = [probe(p) for p in paths]
    w, h = infos[0].width, infos[0].height
    audio = infos[0].path if infos[0].has_audio else None
    with VideoWriter(out, w * len(paths), h, infos[0].fps, audio, EncodeConfig(crf=16)) as wr:
        for frames in zip(*(read_frames(i) for i in infos)):
            row = np.concatenate([label(f, t) for f, t in zip(frames, labels)], axis=1)
            wr.write(row)
    return out


def label(frame: np.ndarray, text: str) -> np.ndarray:
    img = frame.copy()
    cv2.putText(img, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def contact_sheet(
    paths: list[Path], out: Path, labels: list[str], frames: int = 4, face_box=None
) -> Path:
    """PNG: rows = evenly spaced frames, columns = videos; cropped to `face_box` if given."""
    infos = [probe(p) for p in paths]
    n = min(i.frame_count for i in infos)
    pick = set(np.linspace(0, n - 1, frames).round().astype(int).tolist())
    columns = []
    for info, text in zip(infos, labels):
        tiles = []
        for i, f in enumerate(read_frames(info)):
            if i in pick:
                if face_box is not None:
                    x0, y0, x1, y1 = face_box
                    f = f[y0:y1, x0:x1]
                tiles.append(cv2.resize(f, (256, round(256 * f.shape[0] / f.shape[1]))))
        columns.append(label(np.concatenate(tiles, axis=0), text))
    sheet = np.concatenate(columns, axis=1)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out


def run_demo(
    out_dir: Path,
    seconds: float = 12.0,
    progress: ProgressFn | None = None,
) -> DemoResult:
    """Build the identity from the example's first 75%, repair a Wav2Lip-like copy of the
    rest with the restore defaults, measure it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * FPS))
    cut = int(round(n * TRAIN_SHARE))
    real_footage = write_example_clip(out_dir / "real_footage.mp4", seconds, stop=cut)
    real_test = write_example_clip(out_dir / "real_test.mp4", seconds, start=cut)
    t0 = time.perf_counter()
    ident = build_identity([real_footage], progress=progress)
    validate_identity(ident)  # as train-identity does: gains and the engine's figures
    path = ident.save(out_dir / "astronaut.safetensors")
    build_seconds = time.perf_counter() - t0
    generated = out_dir / "generated.mp4"
    cfg = PipelineConfig(crop=ident.crop)
    degrade_video(real_test, generated, GENERATORS["wav2lip"], cfg=cfg, progress=progress)
    repaired = out_dir / "repaired.mp4"
    request = EngineRequest(ident)
    summary = restore_video(generated, repaired, request, identity_restore(cfg), progress=progress)
    before = evaluate_videos(generated, real_test, cfg).summary["psnr_face"]
    after = evaluate_videos(repaired, real_test, cfg).summary["psnr_face"]
    videos, names = [generated, repaired, real_test], ["generated", "repaired", "real"]
    sbs = side_by_side(videos, out_dir / "side_by_side.mp4", names)
    w, h = SIZE
    face = (int(w * 0.3), int(h * 0.05), int(w * 0.7), int(h * 0.95))
    sheet = contact_sheet(videos, out_dir / "contact_sheet.png", names, 3, face)
    return DemoResult(
        real_footage, generated, repaired, real_test, sbs, sheet, path, before, after,
        build_seconds, summary.engine,
    )  # fmt: skip
