"""Shared fixtures: synthetic clips the tests make themselves, and the real clips in
../shared/data/clips (tests that need them skip cleanly when that folder is absent)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from threpair.config import EncodeConfig
from threpair.synthetic import talking_head_frames
from threpair.video import VideoWriter, ffmpeg_exe, write_tone

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
REAL_CLIPS = ["anchor_de_20s", "obama_20s", "hill_8s", "kim_source_7s", "kim_wav2lip_8s"]


def real_clip(name: str) -> Path:
    path = CLIPS / f"{name}.mp4"
    if not path.is_file():
        pytest.skip(f"real clip {path} not available (needs ../shared/data)")
    return path


def make_clip(
    path: Path,
    n_frames: int = 40,
    size: tuple[int, int] = (320, 240),
    fps: Fraction = Fraction(25),
    audio: bool = True,
    seed: int = 0,
    kind: str = "talking",
    encode: EncodeConfig | None = None,
) -> Path:
    """Write a synthetic talking-head clip (astronaut photo, moving, mouth moving) with a
    sine tone as audio. kind: talking | two_faces | blank (no face at all)."""
    w, h = size
    if kind == "talking":
        frames = talking_head_frames(n_frames, size, float(fps), seed)
    elif kind == "two_faces":
        frames = talking_head_frames(n_frames, size, float(fps), seed, two_faces=True)
    else:
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 255, (h, w, 3), np.uint8)
        frames = (np.roll(base, i, axis=1) for i in range(n_frames))
    tone = write_tone(path.with_suffix(".tone.m4a"), float(n_frames / fps)) if audio else None
    with VideoWriter(path, w, h, fps, tone, encode or EncodeConfig(crf=12)) as wr:
        for f in frames:
            wr.write(np.ascontiguousarray(f[:h, :w]))
    return path


def ffmpeg(*args: str) -> None:
    """Run ffmpeg with the given arguments (tests use it to make odd inputs)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 40-frame 320x240 25 fps synthetic talking head with audio."""
    return make_clip(tmp_path_factory.mktemp("clips") / "talking.mp4")
