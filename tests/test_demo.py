"""The README's first command, end to end, on a shorter example."""

from __future__ import annotations

import subprocess
import sys

import cv2

from threpair.demo import SIZE
from threpair.video import probe


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "threpair", "demo", "--out", str(out), "--seconds", "4",
         "--quiet"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "face PSNR vs the real frames" in r.stdout
    assert "engine references" in r.stdout  # the bank's engine was validated and used
    for name in ("generated.mp4", "repaired.mp4", "real_test.mp4", "side_by_side.mp4"):
        assert probe(out / name).frame_count == 25  # the last 25% of 4 s at 25 fps
    assert probe(out / "side_by_side.mp4").width == 3 * SIZE[0]
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 3 * 256 and sheet.std() > 10
    assert (out / "astronaut.safetensors").stat().st_size > 0
