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
        ("bad_references", 2, "--references"),
        ("bad_batch", 2, "--batch-size"),
        ("ext_xyz", 2, "not a video container"),
        ("ext_gif", 2, "not a video container"),
        ("ext_mp3", 2, "not a video container"),
        ("ext_png", 2, "not a video container"),
        ("ext_wav", 2, "not a video container"),
        ("stdout", 2, "stdout"),
        ("exists", 2, "--overwrite"),
        ("report_no_dir", 2, "--report"),
        ("report_is_dir", 2, "--report"),
        ("cuda", 2, "--device cuda"),
        ("bad_device", 2, "--device"),
        ("long_name", 2, "the limit is 255"),
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
    elif case == "bad_references":
        extra = ["--references", "0"]
    elif case == "bad_batch":
        extra = ["--batch-size", "0"]
    elif case.startswith("ext_"):
        out = str(tmp_path / f"out.{case[4:]}")
    elif case == "stdout":
        out = "-"
    elif case == "exists":
        (tmp_path / "out.mp4").write_bytes(b"an earlier result")
    elif case == "report_no_dir":
        extra = ["--report", str(tmp_path / "no_dir" / "r.json")]
    elif case == "report_is_dir":
        extra = ["--report", str(tmp_path)]
    elif case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra = ["--device", "cuda"]
    elif case == "bad_device":
        extra = ["--device", "gpu"]
    elif case == "long_name":
        out = str(tmp_path / ("n" * 300 + ".mp4"))
    before = clip.read_bytes()
    r = run("restore", src, out, *extra)
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert clip.read_bytes() == before
    assert not list(tmp_path.glob(".*threpair-tmp*"))
    if case == "exists":
        assert (tmp_path / "out.mp4").read_bytes() == b"an earlier result"
    elif case != "same":
        assert not (tmp_path / "out.mp4").exists()


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


@pytest.mark.parametrize(
    "args, option",
    [
        (["restore", "{clip}", "{out}", "--margin", "0"], "--margin"),
        (["restore", "{clip}", "{out}", "--margin", "-1"], "--margin"),
        (["restore", "{clip}", "{out}", "--crf", "100"], "--crf"),
        (["restore", "{clip}", "{out}", "--detect-every", "0"], "--detect-every"),
        (["restore", "{clip}", "{out}", "--detect-every", "14"], "--detect-every"),
        (["restore", "{clip}", "{out}", "--smooth", "-1"], "--smooth"),
        (["restore", "{clip}", "{out}", "--codec", "h264_fancy"], "--codec"),
        (["restore", "{clip}", "{out}", "--preset", "warp9"], "--preset"),
        (["restore", "{clip}", "{out}", "--min-strength", "2"], "--min-strength"),
        (["degrade", "{clip}", "{out}", "--blur", "-1"], "--blur"),
        (["degrade", "{clip}", "{out}", "--gen-res", "5000"], "--gen-res"),
        (["degrade", "{clip}", "{out}", "--crf", "-3"], "--crf"),
        (["train-identity", "{clip}", "--margin", "0"], "--margin"),
        (["train-identity", "{clip}", "--steps", "0"], "--steps"),
        (["eval", "{clip}", "{clip}", "--window", "0"], "--window"),
    ],
)
def test_option_ranges_and_choices_are_checked_up_front(tmp_path, clip, args, option):
    out = tmp_path / "out.mp4"
    r = run(*[a.format(clip=clip, out=out) for a in args])
    assert r.returncode == 2, r.stderr
    assert option in r.stderr and "Traceback" not in r.stderr
    if option in ("--codec", "--preset"):  # says what is accepted
        assert ("libx264" if option == "--codec" else "veryslow") in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_single_file_overwrite_agrees_with_batch(tmp_path, clip):
    out = tmp_path / "out.mp4"
    assert run("restore", str(clip), str(out), "-q").returncode == 0
    first = out.stat().st_mtime_ns
    r = run("restore", str(clip), str(out), "-q")
    assert r.returncode == 2 and "--overwrite" in r.stderr and out.stat().st_mtime_ns == first
    r = run("restore", str(clip), str(out), "-q", "--overwrite")
    assert r.returncode == 0 and out.stat().st_mtime_ns != first


def test_eval_refuses_different_frame_rates(tmp_path, clip):
    from tests.conftest import ffmpeg

    other = tmp_path / "30fps.mp4"
    ffmpeg("-i", str(clip), "-r", "30", "-c:a", "copy", str(other))
    r = run("eval", str(other), str(clip))
    assert r.returncode == 2 and "30 fps" in r.stderr and "25 fps" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1


def test_eval_json_is_strict_and_nothing_scored_fails(tmp_path, clip):
    from tests.conftest import make_clip

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))

    r = run("eval", str(clip), str(clip), "--json", "-q")  # identical: PSNR is infinite
    assert r.returncode == 0, r.stderr
    summary = strict(r.stdout)["summary"]
    assert summary["psnr_face"] == "inf" and summary["frames_scored"] > 0
    blank = make_clip(tmp_path / "blank.mp4", 10, kind="blank", audio=False)
    r = run("eval", str(blank), str(blank), "--json", "-q")
    assert r.returncode == 1 and "nothing could be scored" in r.stderr
    summary = strict(r.stdout)["summary"]
    assert summary["psnr_face"] is None and summary["frames_scored"] == 0


def test_training_progress_shows_time_when_minutes_bound_the_run():
    from threpair.cli import training_reporter

    calls = []
    report = training_reporter(lambda *a: calls.append(a), 100_000, False, minutes=2.0)
    report({"event": "log", "step": 250, "elapsed": 30.0})
    report({"event": "log", "step": 500, "elapsed": 60.0})
    assert calls == [("train", 30.0, 120.0, "s"), ("train", 60.0, 120.0, "s")]
    calls.clear()
    report = training_reporter(lambda *a: calls.append(a), 300, False, minutes=2.0)
    report({"event": "log", "step": 250, "elapsed": 30.0})  # the step cap comes first
    assert calls == [("train", 250, 300)]
