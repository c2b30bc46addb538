"""A trained identity model inside the restore pipeline: batching, hysteresis, confidence."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from threpair.config import CropConfig, PipelineConfig
from threpair.data import extract_crops
from threpair.inference import IdentityModel
from threpair.metrics import temporal_error_noref
from threpair.model import PRESETS
from threpair.train import TrainConfig, train


def train_tiny(out: Path, clip: Path, use_vq: bool = True) -> tuple[Path, np.ndarray]:
    """The tiny preset, with its quantizer or without (`use_vq=False`: a plain autoencoder),
    trained for a few seconds on the synthetic clip's face crops: (checkpoint, the crops)."""
    torch.set_num_threads(1)
    cfg = PipelineConfig(crop=CropConfig(size=32))
    cs = extract_crops(clip, cfg, use_cache=False)
    tr, va = cs.split(0.2)
    tc = TrainConfig(steps=150, batch_size=8, val_every=150, log_every=50, sample_rows=0)
    meta = {"crop": cfg.crop.to_dict()}
    net = replace(PRESETS["tiny"], use_vq=use_vq)
    result = train(np.asarray(tr), np.asarray(va), net, tc, out, meta)
    return result.checkpoint, np.asarray(cs.crops)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, clip):
    return train_tiny(tmp_path_factory.mktemp("model") / "m.safetensors", clip)


def run_in_batches(model: IdentityModel, crops: np.ndarray, batch: int) -> np.ndarray:
    model.reset()
    return np.concatenate([model(crops[i : i + batch]) for i in range(0, len(crops), batch)])


def test_batch_size_does_not_change_results(trained):
    path, crops = trained
    model = IdentityModel.load(path, device="cpu", hysteresis=0.3)
    one = run_in_batches(model, crops[:16], 1)
    stats_one = [s.kept for s in model.frame_stats]
    model.frame_stats.clear()
    eight = run_in_batches(model, crops[:16], 8)
    stats_eight = [s.kept for s in model.frame_stats]
    assert np.abs(one.astype(int) - eight).mean() < 0.05
    assert np.allclose(stats_one, stats_eight, atol=0.02)


def test_hysteresis_reduces_flicker(trained):
    path, crops = trained
    rng = np.random.default_rng(0)
    still = np.repeat(crops[10:11], 24, axis=0).astype(np.int16)
    noisy = np.clip(still + rng.normal(0, 6, still.shape), 0, 255).astype(np.uint8)
    plain = IdentityModel.load(path, device="cpu", hysteresis=0.0)
    sticky = IdentityModel.load(path, device="cpu", hysteresis=0.5)
    flicker_plain = temporal_error_noref(list(run_in_batches(plain, noisy, 8)))
    flicker_sticky = temporal_error_noref(list(run_in_batches(sticky, noisy, 8)))
    assert flicker_sticky < flicker_plain
    assert np.mean([s.kept for s in sticky.frame_stats[1:]]) > 0


def test_confidence_drops_on_heavy_noise(trained):
    path, crops = trained
    model = IdentityModel.load(path, device="cpu")
    clean = crops[:16]
    rng = np.random.default_rng(1)
    noise = np.clip(clean + rng.normal(0, 80, clean.shape), 0, 255).astype(np.uint8)
    model(clean)
    clean_stats = model.last_stats
    model.reset()
    model(noise)
    noise_stats = model.last_stats
    assert np.mean([s.outside for s in noise_stats]) > np.mean([s.outside for s in clean_stats])
    assert np.mean([s.margin for s in noise_stats]) < np.mean([s.margin for s in clean_stats])
    cfg = PipelineConfig().confidence
    base = model.outside_baseline
    assert np.mean([cfg.strength(s.outside, base) for s in clean_stats]) >= np.mean(
        [cfg.strength(s.outside, base) for s in noise_stats]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 path needs CUDA")
def test_fp16_matches_fp32(trained):
    path, crops = trained
    gpu = IdentityModel.load(path, device="cuda")
    cpu = IdentityModel.load(path, device="cpu", precision="fp32")
    a, b = gpu(crops[:16]).astype(int), cpu(crops[:16]).astype(int)
    assert np.abs(a - b).mean() < 2.0


def test_bf16_matches_fp32(trained):
    """The CPU's bf16 autocast (the default where the CPU has native bf16) agrees with fp32."""
    path, crops = trained
    fast = IdentityModel.load(path, device="cpu", precision="bf16")
    exact = IdentityModel.load(path, device="cpu", precision="fp32")
    assert fast.autocast_dtype == torch.bfloat16 and exact.autocast_dtype is None
    a, b = fast(crops[:16]).astype(int), exact(crops[:16]).astype(int)
    assert np.abs(a - b).mean() < 2.0


def test_fp16_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from threpair.inference import resolve_precision

    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def test_restore_with_network_writes_report(tmp_path, trained, clip):
    """An identity with the trained network, forced to use it: per-frame confidence in the
    report, and the engine record says it was forced."""
    from threpair.identity import attach_network, build_identity

    path, _ = trained
    ident = build_identity([clip], bank_size=8, resolution=128)
    attach_network(ident, path)
    ident_path = ident.save(tmp_path / "talking.safetensors")
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-m", "threpair", "restore", str(clip), str(out), "-m", str(ident_path),
         "--engine", "sovqae", "--generator", "48", "--report", str(report), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert data["frames"] == 40 and len(data["per_frame"]) == 40
    assert data["engine"]["engine"] == "sovqae" and data["engine"]["generator_res"] == 48
    assert all("outside" in f and 0 < f["strength"] <= 1 for f in data["per_frame"])
    assert data["confidence"]["frames_scored"] == 40


@pytest.fixture(scope="module")
def trained_plain(tmp_path_factory, clip):
    return train_tiny(tmp_path_factory.mktemp("plain") / "p.safetensors", clip, use_vq=False)[0]


def test_device_path_matches_numpy_path(trained_plain, clip):
    """warp='torch' (what CUDA uses: crops stay on the device) agrees with the OpenCV path
    up to rounding, through a trained network.

    The network is the tiny preset without its quantizer: 1-NN code choice is not continuous
    in its input, so the paths' sub-level crop differences (float crops on the device, uint8
    from OpenCV, whose warp samples at 1/32 px) can flip a code. With the quantizer, frame 0
    of this clip did (OpenCV 5.1: differences of up to 6 levels in a few blobs, 7.5% of the
    change, where frames 1-7 differ by rounding only). The crop and paste themselves are
    held to OpenCV pixel by pixel in tests/test_geometry_torch.py."""
    from threpair.restore import process_batch
    from threpair.synthetic import talking_head_boxes
    from threpair.video import probe, read_frames

    model = IdentityModel.load(trained_plain, device="cpu")
    frames = list(read_frames(probe(clip)))[:8]
    geo = [
        np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 1.5 * (b[2] - b[0]), 0.0])
        for b in talking_head_boxes(8)
    ]
    runs = {}
    for warp in ("opencv", "torch"):
        model.reset()
        cfg = PipelineConfig(crop=model.crop, warp=warp)
        runs[warp] = process_batch(frames, geo, model, cfg, model.resolution)
    (a, ra), (b, rb) = runs["opencv"], runs["torch"]
    diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    changed = np.abs(np.stack(a).astype(int) - np.stack(frames).astype(int)).sum()
    assert changed > 0 and diff.sum() < 0.05 * changed  # same repair up to rounding
    assert [r["strength"] for r in ra] == pytest.approx([r["strength"] for r in rb], abs=0.05)
