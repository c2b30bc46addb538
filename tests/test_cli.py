"""The command line as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from threpair import __version__
from threpair.video import probe


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threpair", *args], capture_output=True, text=True, timeout=300
    )


def test_version():
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_restore_json(tmp_path, clip):
    out = tmp_path / "out.mp4"
    r = run("restore", str(clip), str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames"] == 40 and probe(out).frame_count == 40


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing", 2, "no such file"),
        ("text", 1, "not a readable video"),
        ("audio_only", 1, "no video stream"),
        ("truncated", 1, "truncated"),
        ("same", 2, "output is the input"),
        ("no_dir", 2, "does not exist"),
        ("bad_region", 2, "--region"),
        ("bad_model", 2, "identity not found"),
        ("bad_smooth", 2, "--temporal-smooth"),
        ("bad_batch", 2, "--batch-size"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, clip, case, code, message):
    from tests.conftest import ffmpeg

    src, out, extra = str(clip), str(tmp_path / "out.mp4"), []
    if case == "missing":
        src = str(tmp_path / "nope.mp4")
    elif case == "text":
        src = str(tmp_path / "notes.mp4")
        (tmp_path / "notes.mp4").write_text("hello\n" * 50)
    elif case == "audio_only":
        src = str(tmp_path / "a.m4a")
        ffmpeg("-i", str(clip), "-vn", "-c:a", "copy", src)
    elif case == "truncated":
        src = str(tmp_path / "t.mp4")
        (tmp_path / "t.mp4").write_bytes(clip.read_bytes()[:5000])
    elif case == "same":
        out = src
    elif case == "no_dir":
        out = str(tmp_path / "missing_dir" / "out.mp4")
    elif case == "bad_region":
        extra = ["--region", "ears"]
    elif case == "bad_model":
        extra = ["--model", str(tmp_path / "none.safetensors")]
    elif case == "bad_smooth":
        extra = ["--temporal-smooth", "1.5"]
    elif case == "bad_batch":
        extra = ["--batch-size", "0"]
    before = clip.read_bytes()
    r = run("restore", src, out, *extra)
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert clip.read_bytes() == before
    assert not list(tmp_path.glob(".*threpair-tmp*"))


def test_unwritable_output_folder(tmp_path, clip):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        r = run("restore", str(clip), str(locked / "out.mp4"))
        assert r.returncode == 2 and "not writable" in r.stderr
    finally:
        locked.chmod(0o700)
