"""`threpair demo`: the main job on a built-in example, offline.

The example clip is synthesized from a real face photo that scikit-image ships
(`skimage.data.astronaut()`, a public-domain NASA portrait) with head motion, mouth
movement and a sine tone as audio, so the demo needs nothing but the installed packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from threpair.config import EncodeConfig
from threpair.restore import FaceModel, ProgressFn, RestoreSummary, restore_video
from threpair.synthetic import talking_head_frames
from threpair.video import VideoWriter, write_tone


def write_example_clip(
    path: Path,
    seconds: float = 6.0,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    seed: int = 0,
) -> Path:
    """Write the synthetic talking-head example (with a tone as audio) to `path`."""
    n = int(round(seconds * fps))
    tone = write_tone(path.with_name(path.stem + "_tone.m4a"), seconds)
    try:
        with VideoWriter(path, size[0], size[1], Fraction(fps), tone, EncodeConfig(crf=14)) as w:
            for frame in talking_head_frames(n, size, float(fps), seed):
                w.write(frame)
    finally:
        tone.unlink(missing_ok=True)
    return path


@dataclass
class DemoResult:
    example: Path
    restored: Path
    summary: RestoreSummary


def run_demo(
    out_dir: Path, model: FaceModel | None = None, progress: ProgressFn | None = None
) -> DemoResult:
    """Make the example clip in `out_dir` and restore it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    example = write_example_clip(out_dir / "example.mp4")
    restored = out_dir / "example_restored.mp4"
    summary = restore_video(example, restored, model, progress=progress)
    return DemoResult(example, restored, summary)
