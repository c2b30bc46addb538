"""`train-identity` and `inspect` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threpair", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def test_train_inspect_resume(tmp_path, clip):
    env = {**os.environ, "THREPAIR_CACHE": str(tmp_path / "cache")}
    ckpt = tmp_path / "talking.safetensors"
    r = run("train-identity", str(clip), "--preset", "tiny", "--steps", "20", "--out", str(ckpt),
            "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["steps"] == 20 and ckpt.is_file()
    assert (tmp_path / "talking.samples.png").is_file()
    meta = json.loads(run("inspect", str(ckpt), "--json").stdout)
    assert meta["model_config"]["resolution"] == 32
    assert meta["metadata"]["crop"]["size"] == 32
    assert meta["metadata"]["sources"][0]["sha256"]
    theory = meta["metadata"]["training"]["theory"]
    assert {"delta_min", "eps_max", "lipschitz", "nroub"} <= set(theory)
    r = run("train-identity", str(clip), "--preset", "tiny", "--steps", "30", "--out", str(ckpt),
            "--resume", "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 30
    table = run("inspect", str(ckpt))
    assert table.returncode == 0 and "delta_min" in table.stdout


def test_train_bad_input(tmp_path):
    r = run("train-identity", str(tmp_path / "missing.mp4"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("train-identity", str(tmp_path), "--preset", "huge")
    assert r.returncode == 2


def test_train_out_is_checked_before_training(tmp_path, clip):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    r = run("train-identity", str(clip), "--out", str(a_file / "sub" / "m.safetensors"))
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    r = run("train-identity", str(clip), "--out", str(tmp_path))
    assert r.returncode == 2 and "--out" in r.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: only checked as a user
            r = run("train-identity", str(clip), "--out", str(locked / "m.safetensors"))
            assert r.returncode == 2 and "not writable" in r.stderr
    finally:
        locked.chmod(0o700)


def test_train_device_cuda_without_cuda(tmp_path, clip):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has CUDA")
    r = run(
        "train-identity", str(clip), "--device", "cuda", "--out", str(tmp_path / "m.safetensors")
    )
    assert r.returncode == 2 and "--device cuda" in r.stderr and "Traceback" not in r.stderr


def test_train_on_one_frame_says_what_is_missing(tmp_path, clip):
    from tests.conftest import ffmpeg

    one = tmp_path / "one.mp4"
    ffmpeg("-i", str(clip), "-frames:v", "1", "-an", str(one))
    env = {**os.environ, "THREPAIR_CACHE": str(tmp_path / "cache")}
    r = run("train-identity", str(one), "--preset", "tiny", "--out",
            str(tmp_path / "m.safetensors"), env=env)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "too little footage" in r.stderr and "1 frame(s)" in r.stderr
    assert "uint8" not in r.stderr


def test_resume_without_state_says_so(tmp_path, clip):
    env = {**os.environ, "THREPAIR_CACHE": str(tmp_path / "cache")}
    r = run("train-identity", str(clip), "--preset", "tiny", "--steps", "2", "--resume",
            "--out", str(tmp_path / "m.safetensors"), "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "no saved state" in r.stderr and "from scratch" in r.stderr
