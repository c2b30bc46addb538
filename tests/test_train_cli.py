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
