"""The training and band-split paths that only a GPU runs: fp16/bf16 autocast, channels_last,
DataLoader workers with pinned memory, torch.compile. Skipped without CUDA (the GPU runbook,
bench/gpu_run.sh, runs them); the band-split check also runs on the CPU under bf16."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_train import CFG, TRAIN, VAL, quick
from threpair import checkpoint
from threpair.bands import area_down
from threpair.model import PRESETS, SOVQAE
from threpair.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def devices_and_dtypes() -> list[tuple[str, torch.dtype]]:
    out = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        out += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return out


@pytest.mark.parametrize(("device", "dtype"), devices_and_dtypes())
def test_band_split_keeps_the_low_band_under_autocast(device: str, dtype: torch.dtype) -> None:
    """Under fp16/bf16 autocast the low band is still the input's: the split runs in fp32.
    Tolerance: 1e-4 in [-1, 1] units (0.013 uint8 levels)."""
    torch.manual_seed(0)
    model = SOVQAE(PRESETS["tiny"]).to(device).eval()
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32, device=device) * 2 - 1
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        y, _ = model(x)
    g = model.band_grid_for(32)
    assert y.dtype == torch.float32
    assert float((area_down(y, g) - area_down(x, g)).abs().max()) < 1e-4


@cuda
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_training_on_cuda(tmp_path: Path, amp: str) -> None:
    """A few steps on CUDA with the GPU settings (autocast, channels_last, a worker with pinned
    memory, patches): the loss goes down and the checkpoint loads."""
    logs: list[dict] = []
    tc = quick(steps=20, lr=2e-3, disc_start=10, val_every=10, log_every=1, device="cuda",
               amp=amp, workers=1, patch_size=16)  # fmt: skip
    res = train(TRAIN, VAL, CFG, tc, tmp_path / "c.safetensors", {}, on_progress=logs.append)
    losses = [e["rec"] for e in logs if e["event"] == "log"]
    assert res.steps == 20 and np.mean(losses[-5:]) < losses[0]
    assert all(np.isfinite(v) for v in res.val.values())
    model, _, _ = checkpoint.load(res.checkpoint)
    assert model.cfg == CFG


@cuda
def test_compiled_training_on_cuda(tmp_path: Path) -> None:
    tc = quick(steps=6, device="cuda", compile=True, disc_start=10_000, val_every=0)
    res = train(TRAIN, VAL, CFG, tc, tmp_path / "k.safetensors", {})
    assert res.steps == 6 and np.isfinite(res.val["psnr_repair"])


@cuda
def test_resume_on_cuda(tmp_path: Path) -> None:
    tc = quick(steps=4, device="cuda", disc_start=10_000)
    out = tmp_path / "r.safetensors"
    train(TRAIN, VAL, CFG, dataclasses.replace(tc, steps=2), out, {})
    res = train(TRAIN, VAL, CFG, tc, out, {}, resume=True)
    assert res.resumed_from == 2 and res.steps == 4
