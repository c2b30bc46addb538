"""Odd but valid inputs work; interruptions leave nothing behind; bad checkpoints are refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from tests.conftest import make_clip
from threpair.restore import restore_video
from threpair.video import probe, stream_packet_hashes


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threpair", *args], capture_output=True, text=True, timeout=600, **kw
    )


@pytest.mark.parametrize(
    "size, fps",
    [((3840, 2160), Fraction(25)), ((64, 64), Fraction(25)), ((320, 240), Fraction(24000, 1001))],
)
def test_sizes_and_rates(tmp_path, size, fps):
    src = make_clip(tmp_path / "in.mp4", 6, size, fps)
    summary = restore_video(src, tmp_path / "out.mp4")
    got = probe(tmp_path / "out.mp4")
    assert (got.width, got.height, got.fps, got.frame_count) == (*size, fps, 6)
    assert stream_packet_hashes(tmp_path / "out.mp4") == stream_packet_hashes(src)
    if size[0] >= 320:
        assert summary.frames_with_face == 6


def as_from_a_terminal() -> None:
    """Child setup: SIGINT at its default, as in a terminal. A test run started in the
    background (`cmd &`, nohup, some CI runners) hands its children SIGINT ignored, and a
    process that starts with SIGINT ignored rightly keeps ignoring Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_restore(src: Path, out: Path) -> subprocess.Popen:
    """`threpair restore src out -q` in a child, once it is writing (see wait_for_work)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "threpair", "restore", str(src), str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_from_a_terminal,
    )  # fmt: skip
    wait_for_work(proc, out.parent)
    return proc


def wait_for_work(proc: subprocess.Popen, folder: Path, limit: float = 600.0) -> None:
    """Block until the restore is writing (its hidden temp output exists in `folder`), so
    the signal lands mid-work and not during start-up, however loaded the machine is."""
    t0 = time.monotonic()
    while not any(".threpair-tmp-" in p.name for p in folder.iterdir()):
        assert proc.poll() is None, "restore ended before it started writing"
        assert time.monotonic() - t0 < limit, "restore did not start writing"
        time.sleep(0.2)
    time.sleep(0.5)


def test_ctrl_c_leaves_no_partial_output(tmp_path):
    src = make_clip(tmp_path / "long.mp4", 600, (640, 360))  # ~20 s of work
    out = tmp_path / "out.mp4"
    proc = start_restore(src, out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "long.tone.m4a"]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", 600, (640, 360))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_handled_like_ctrl_c(tmp_path, long_clip, sig):
    out = tmp_path / "out.mp4"
    proc = start_restore(long_clip, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"interrupted ({sig.name})" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_are_refused(tmp_path, clip):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    r = run("restore", str(clip), str(tmp_path / "out.mp4"), "-m", str(broken))
    assert r.returncode == 1 and "broken.safetensors" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    r = run("inspect", str(broken))
    assert r.returncode == 1 and "Traceback" not in r.stderr


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 48 KB tmpfs (needs root, as on CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full(tmp_path, tiny_disk):
    src = make_clip(tmp_path / "big.mp4", 60, (640, 360))
    before = src.read_bytes()
    out = tiny_disk / "out.mp4"
    r = run("restore", str(src), str(out), "-q")
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disk full" in lines[0] and str(out) in lines[0]
    assert list(tiny_disk.iterdir()) == [] and src.read_bytes() == before
