"""`train-identity` and `inspect` as a user runs them.

`--device cpu` keeps the default (a reference bank only, no network) the same on a machine
with a GPU, where the default would also train the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "threpair", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "THREPAIR_CACHE": str(tmp_path / "cache")}


def test_default_builds_the_bank_only(tmp_path, clip, env):
    ident = tmp_path / "talking.safetensors"
    r = run("train-identity", str(clip), "--out", str(ident), "--device", "cpu", "--json", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["identity"] == str(ident) and ident.is_file()
    assert {"bank", "holdout", "network", "gains"} <= set(result)
    assert result["network"] is None
    # 40 frames: the last 4 held out, the other 36 fit in the default 64-crop bank; the
    # synthetic face crop is 134 px in the frame -> 128-px crops
    assert result["bank"]["size"] == 36 and result["bank"]["shape"] == [36, 128, 128, 3]
    assert result["holdout"]["shape"][0] == 4
    ref = result["gains"]["references"]["96"]
    assert {"degraded", "repaired", "gain", "mouth_gain"} <= set(ref)
    shown = json.loads(run("inspect", str(ident), "--json").stdout)
    assert shown["format"] == "identity" and shown["network"] is None
    assert shown["bank"] == result["bank"] and shown["gains"] == result["gains"]
    assert shown["sources"][0]["sha256"] and shown["sources"][0]["frames"] == 40
    # what the reference engine measured while validating, for restores at 128 px / 96 px
    (key,) = shown["reference_state"]
    assert key.startswith("v") and " 128px gen96 " in key
    assert {"tau", "calibration", "outside_baseline"} <= set(shown["reference_state"][key])
    table = run("inspect", str(ident))
    assert table.returncode == 0
    assert "reference bank" in table.stdout and "gain references @ 96 px" in table.stdout
    assert "references measured" in table.stdout


@pytest.mark.slow
def test_network_training_and_resume(tmp_path, clip, env):
    ident = tmp_path / "talking.safetensors"
    args = ("train-identity", str(clip), "--preset", "tiny", "--out", str(ident), "--device", "cpu")
    r = run(*args, "--steps", "20", "--json", env=env)
    assert r.returncode == 0, r.stderr
    net = json.loads(r.stdout)["network"]
    assert net is not None and net["preset"] == "tiny" and net["resolution"] == 32
    assert net["training"]["steps"] == 20
    shown = json.loads(run("inspect", str(ident), "--json").stdout)
    assert shown["network"] is not None and shown["network"]["training"]["steps"] == 20
    theory = shown["network"]["training"]["theory"]
    assert {"delta_min", "eps_max", "lipschitz", "nroub"} <= set(theory)
    assert {"references", "sovqae"} <= set(shown["gains"])  # both engines validated
    # the bank is still there next to the network
    assert shown["bank"]["size"] == 36
    # --resume continues the network's training from step 20 (not from scratch)
    r = run(*args, "--steps", "30", "--resume", env=env)
    assert r.returncode == 0, r.stderr
    assert "resuming from step 20" in r.stdout, r.stdout
    shown = json.loads(run("inspect", str(ident), "--json").stdout)
    assert shown["network"]["training"]["steps"] == 30
    table = run("inspect", str(ident))
    assert table.returncode == 0 and "delta_min" in table.stdout and "tiny" in table.stdout


def test_train_bad_input(tmp_path, clip):
    line = one_line_error(run("train-identity", str(tmp_path / "missing.mp4")))
    assert "missing.mp4" in line
    line = one_line_error(run("train-identity", str(clip), "--bank-size", "0"))
    assert "bank size" in line
    line = one_line_error(run("train-identity", str(clip), "--out", str(tmp_path / "a.pt")))
    assert ".safetensors" in line


def test_unknown_preset_fails_first_in_one_line(tmp_path, clip):
    out = tmp_path / "x.safetensors"
    line = one_line_error(
        run("train-identity", str(clip), "--preset", "huge", "--steps", "5", "--out", str(out),
            "--device", "cpu")
    )  # fmt: skip
    assert "huge" in line and "tiny" in line
    assert not out.exists()


def test_unknown_preset_is_refused_even_for_a_bank_only_build(tmp_path, clip, env):
    out = tmp_path / "x.safetensors"
    r = run("train-identity", str(clip), "--preset", "huge", "--out", str(out), "--device",
            "cpu", "--quiet", env=env)  # fmt: skip
    line = one_line_error(r)
    assert "huge" in line
    assert not out.exists()


# ---- from the hardening branch (merged): --out, --device and too-little-footage checks


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
            str(tmp_path / "m.safetensors"), "--quiet", env=env)  # fmt: skip
    line = one_line_error(r)
    assert "footage" in line and "1 frame" in line and "rebuild it" not in line
    assert "uint8" not in r.stderr


def test_resume_without_state_says_so(tmp_path, clip):
    env = {**os.environ, "THREPAIR_CACHE": str(tmp_path / "cache")}
    r = run("train-identity", str(clip), "--preset", "tiny", "--steps", "2", "--resume",
            "--out", str(tmp_path / "m.safetensors"), "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "no saved state" in r.stderr and "from scratch" in r.stderr


def test_network_options_are_checked_before_any_work(tmp_path, clip):
    out = tmp_path / "x.safetensors"
    for args, word in ((["--output", "both"], "--output"), (["--generator", "auto"], "auto")):
        line = one_line_error(run("train-identity", str(clip), *args, "--steps", "2", "--out",
                                  str(out), "--device", "cpu"))  # fmt: skip
        assert word in line
    assert not out.exists()
