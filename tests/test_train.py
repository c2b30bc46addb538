"""Training on the tiny preset: loss goes down, files are written, resume is bit-exact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from threpair import checkpoint
from threpair.errors import InputError
from threpair.losses import (
    VGG16_FILENAME,
    LossConfig,
    VGG16Features,
    active_losses,
    load_perceptual,
)
from threpair.model import PRESETS, SOVQAE
from threpair.train import (
    TrainConfig,
    default_gen_res,
    sample_batch,
    samples_path,
    state_path,
    train,
)

CFG = dataclasses.replace(PRESETS["tiny"], codebook_size=256, dead_code_after=3)  # restarts soon


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def video_crops(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """A slowly panning textured scene: consecutive crops are similar, like video frames."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    scene = cv2.resize(low, (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    scene = np.clip(scene + rng.integers(-20, 21, scene.shape), 0, 255).astype(np.uint8)
    offs = [
        (int(size / 2 * (1 + np.sin(t / 5))), int(size / 2 * (1 + np.cos(t / 7)))) for t in range(n)
    ]
    return np.stack([scene[y : y + size, x : x + size] for x, y in offs])


CROPS = video_crops(48)
TRAIN, VAL = CROPS[:40], CROPS[40:]


def quick(**kw: object) -> TrainConfig:
    base = dict(
        steps=8, batch_size=4, warmup_steps=2, val_every=4, log_every=1, state_every=4,
        sample_rows=2, theory_max_crops=8, lipschitz_crops=1, lipschitz_samples=1,
        val_max_crops=4, disc_start=3,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_a_few_steps_reduce_the_loss_and_write_files(tmp_path: Path) -> None:
    logs: list[dict] = []
    out = tmp_path / "id.safetensors"
    tc = quick(steps=30, lr=2e-3, disc_start=10_000, val_every=30, log_every=1)
    # full re-generation starts from noise; the band split starts near its input (its
    # decoder's last layer is zero) and is checked on a fixed batch below
    full = dataclasses.replace(CFG, output="full")
    res = train(TRAIN, VAL, full, tc, out, {"source": "synthetic"}, on_progress=logs.append)
    losses = [e["rec"] for e in logs if e["event"] == "log"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.5 * losses[0]
    assert logs[0]["event"] == "start" and any("FFT" in s for s in logs[0]["losses"])
    assert res.steps == 30 and res.stopped_by == "steps" and res.resumed_from is None
    for k in ("psnr_degraded", "psnr_repair", "psnr_recon", "code_agreement", "usage_fraction"):
        assert np.isfinite(res.val[k]), k
    for k in ("delta_min", "eps_max", "lipschitz", "nroub"):
        assert np.isfinite(res.theory[k]), k
    assert res.theory["nroub"] == pytest.approx(
        (res.theory["delta_min"] / 2 - res.theory["eps_max"]) / res.theory["lipschitz"]
    )
    model, cfg, meta = checkpoint.load(out)
    assert cfg == full and meta["source"] == "synthetic"
    assert meta["training"]["steps"] == 30 and meta["training"]["losses"] == res.losses
    assert samples_path(out).is_file() and state_path(out).is_file()
    grid = cv2.imread(str(samples_path(out)))
    assert grid.shape[1] == 3 * grid.shape[0] // 2  # 2 rows of degraded | restored | real


def test_resume_after_interrupt_is_bit_identical(tmp_path: Path) -> None:
    tc = quick()  # GAN from step 3, code restarts: every stateful part is exercised
    logs: list[dict] = []
    ref = train(TRAIN, VAL, CFG, tc, tmp_path / "a.safetensors", {}, on_progress=logs.append)
    after = [e for e in logs if e["event"] == "log" and e["step"] > 5]
    assert sum(e["restarted"] for e in after) > 0 and all(e["d_loss"] > 0 for e in after)

    def interrupt_at_5(event: dict) -> None:
        if event["event"] == "log" and event["step"] == 5:
            raise KeyboardInterrupt

    out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(TRAIN, VAL, CFG, tc, out, {}, on_progress=interrupt_at_5)
    assert state_path(out).is_file() and not out.exists()
    res = train(TRAIN, VAL, CFG, tc, out, {}, resume=True)
    assert res.resumed_from == 5 and res.steps == 8
    a, b = torch.load(state_path(tmp_path / "a.safetensors")), torch.load(state_path(out))
    for part in ("model", "ema", "disc"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    ma, _, _ = checkpoint.load(tmp_path / "a.safetensors")
    mb, _, _ = checkpoint.load(out)
    for k, v in ma.state_dict().items():
        assert torch.equal(v, mb.state_dict()[k]), k

    def numbers(val: dict) -> dict:  # wall-clock time differs between runs; the rest must not
        return {k: v for k, v in val.items() if k != "elapsed"}

    assert numbers(res.val) == numbers(ref.val)


def test_resume_refuses_other_settings_and_continues_to_more_steps(tmp_path: Path) -> None:
    out = tmp_path / "c.safetensors"
    train(TRAIN, VAL, CFG, quick(steps=2, disc_start=10_000), out, {})
    with pytest.raises(InputError, match="state"):
        train(TRAIN, VAL, CFG, quick(steps=4, seed=1, disc_start=10_000), out, {}, resume=True)
    res = train(TRAIN, VAL, CFG, quick(steps=4, disc_start=10_000), out, {}, resume=True)
    assert res.resumed_from == 2 and res.steps == 4


def test_variants_clean_only_and_plain_autoencoder(tmp_path: Path) -> None:
    tc = quick(steps=2, degrade_inputs=False, disc_start=10_000)
    res = train(TRAIN, VAL, CFG, tc, tmp_path / "clean.safetensors", {})
    assert res.steps == 2
    ae = dataclasses.replace(CFG, use_vq=False)
    res = train(TRAIN, VAL, ae, tc, tmp_path / "ae.safetensors", {})
    assert "code_agreement" not in res.val and "delta_min" not in res.theory
    assert any("plain autoencoder" in s for s in res.losses)


def test_minutes_limit_and_bad_crops(tmp_path: Path) -> None:
    res = train(TRAIN, VAL, CFG, quick(steps=1000, minutes=1e-9), tmp_path / "m.safetensors", {})
    assert res.stopped_by == "minutes" and res.steps == 0
    with pytest.raises(InputError, match="uint8"):
        train(TRAIN.astype(np.float32), VAL, CFG, quick(), tmp_path / "x.safetensors", {})
    with pytest.raises(InputError, match="32"):
        train(video_crops(4, size=16), VAL, CFG, quick(), tmp_path / "x.safetensors", {})


def test_perceptual_loss_from_a_local_vgg16_file(tmp_path: Path) -> None:
    # random weights in torchvision's layout stand in for the real file (no download here)
    vgg = VGG16Features()
    path = tmp_path / VGG16_FILENAME
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, path)
    loss, note = load_perceptual(path)
    assert loss is not None and str(path) in note
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, x.flip(-1))) > 0.0
    listed = active_losses(LossConfig(), note, True, 100, True, 0.25, 1.0, 0.5, 100)
    assert any(s.startswith("perceptual: VGG16") for s in listed)
    assert not any("FFT" in s for s in listed)
    with pytest.raises(InputError, match="not found"):
        load_perceptual(tmp_path / "missing.pth")


def test_geo_jitter_reframes_input_and_target_alike() -> None:
    from threpair.train import sample_batch

    cfg = quick(degrade_inputs=False, geo_jitter=0.1)
    inputs, targets = sample_batch(CROPS, cfg, 12, step=3, rank=0, world=1)
    again, _ = sample_batch(CROPS, cfg, 12, step=3, rank=0, world=1)
    plain, _ = sample_batch(CROPS, quick(degrade_inputs=False, geo_jitter=0), 12, 3, 0, 1)
    assert np.array_equal(inputs, targets) and np.array_equal(inputs, again)
    assert inputs.shape == plain.shape and not np.array_equal(inputs, plain)


@pytest.mark.parametrize("name", ["small", "base", "hd"])
def test_a_few_patch_steps_reduce_the_loss_at_each_preset(name: str) -> None:
    """The real-scale presets learn on patches of their crops (one attention window) with
    the real degradation; then the same weights take whole crops."""
    cfg = PRESETS[name]
    f = cfg.downsample_factor
    crops = video_crops(2, size=cfg.resolution)
    tc = TrainConfig(batch_size=1, patch_size=8 * f)
    inputs, targets = sample_batch(crops, tc, default_gen_res(cfg.resolution), 0, 0, 1)
    assert inputs.shape == targets.shape == (1, 8 * f, 8 * f, 3)
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    x_in, x = to(inputs), to(targets)
    torch.manual_seed(0)
    model = SOVQAE(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(3):
        y, q = model(x_in)
        loss = (y - x).pow(2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        (loss + q.vq_loss + q.reg_loss).backward()
        opt.step()
    assert losses[-1] < losses[0]
    if name == "small":  # whole crops through the patch-trained weights (the others: test_model)
        with torch.no_grad():
            y, q = model.eval()(to(crops))
        assert y.shape == (2, 3, cfg.resolution, cfg.resolution)
        assert q.indices.shape == (2, cfg.latent_resolution, cfg.latent_resolution)


def test_patch_training_with_workers_and_plateau_stop(tmp_path: Path) -> None:
    """Patches of the tiny crops; batches from a DataLoader worker are the same batches (a
    pure function of the step), so the run is identical; a plateau stops the run and says so."""
    tc = quick(steps=4, patch_size=16, disc_start=10_000, val_every=0)
    a = train(TRAIN, VAL, CFG, tc, tmp_path / "a.safetensors", {})
    b = train(TRAIN, VAL, CFG, dataclasses.replace(tc, workers=1), tmp_path / "b.safetensors", {})
    ma, _, _ = checkpoint.load(a.checkpoint)
    mb, _, _ = checkpoint.load(b.checkpoint)
    for k, v in ma.state_dict().items():
        assert torch.equal(v, mb.state_dict()[k]), k
    logs: list[dict] = []
    never = quick(steps=50, val_every=1, patience=2, min_improvement=1e6, disc_start=10_000)
    res = train(TRAIN, VAL, CFG, never, tmp_path / "p.safetensors", {}, on_progress=logs.append)
    assert res.stopped_by == "plateau" and res.steps == never.patience + 1
    assert [e for e in logs if e["event"] == "plateau"][0]["step"] == res.steps
    with pytest.raises(InputError, match="patch size"):
        train(TRAIN, VAL, CFG, quick(patch_size=15), tmp_path / "x.safetensors", {})
