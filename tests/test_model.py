"""SOVQAE: presets build with the documented shapes; AE baseline; Lipschitz estimate."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from threpair.errors import InputError
from threpair.model import (
    PRESETS,
    SOVQAE,
    ModelConfig,
    estimate_lipschitz,
    get_preset,
    num_parameters,
)

# parameter counts (millions) the presets are designed around; a change here is deliberate
EXPECTED_MPARAMS = {"tiny": 0.175, "cpu64": 2.27, "cpu128": 3.20, "base": 17.5, "hd": 17.5}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_presets_and_get_preset() -> None:
    assert {"tiny", "cpu64", "cpu128", "base", "hd"} <= set(PRESETS)
    assert get_preset("cpu64") is PRESETS["cpu64"]
    with pytest.raises(InputError, match="tiny.*cpu64"):
        get_preset("huge")
    cpu64 = PRESETS["cpu64"]
    assert (cpu64.resolution, cpu64.downsample_factor, cpu64.codebook_size, cpu64.code_dim) == (
        64, 4, 512, 64,
    )  # fmt: skip
    assert PRESETS["base"].resolution == 256 and PRESETS["hd"].resolution == 512
    assert PRESETS["base"].downsample_factor == 16  # the paper's 4 downsamplings


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts(name: str) -> None:
    model = SOVQAE(PRESETS[name])
    assert num_parameters(model) / 1e6 == pytest.approx(EXPECTED_MPARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", ["tiny", "cpu64", "cpu128"])
def test_forward_shapes_and_dtypes(name: str) -> None:
    cfg = PRESETS[name]
    model = SOVQAE(cfg).eval()
    s, h = cfg.resolution, cfg.latent_resolution
    x = torch.rand(2 if name != "cpu128" else 1, 3, s, s) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        y, q = model(x)
    b = x.shape[0]
    assert z.shape == (b, cfg.code_dim, h, h) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(b, h, h))  # unit latents
    assert y.shape == x.shape and y.dtype == torch.float32
    assert q.indices is not None and q.indices.shape == (b, h, h)
    assert int(q.indices.max()) < cfg.codebook_size
    assert q.distances is not None and q.distances.shape == (b, h, h)
    assert q.vq_loss.ndim == 0 and q.reg_loss.ndim == 0 and float(q.delta_min) > 0
    torch.testing.assert_close(model.decode(q.z_q), y)


@pytest.mark.parametrize("name", ["base", "hd"])
def test_gpu_presets_encode_and_decode_small_inputs(name: str) -> None:
    # fully convolutional: a 64-px input checks the wiring without a slow full-size pass
    cfg = PRESETS[name]
    model = SOVQAE(cfg).eval()
    f = cfg.downsample_factor
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 3, 64, 64))
        assert z.shape == (1, cfg.code_dim, 64 // f, 64 // f)
        q = model.quantize(z)
        assert model.decode(q.z_q).shape == (1, 3, 64, 64)


def test_tiny_training_step_is_fast() -> None:
    cfg = PRESETS["tiny"]
    model = SOVQAE(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    times = []
    for _ in range(3):
        t = time.perf_counter()
        y, q = model(x)
        loss = (y - x).pow(2).mean() + q.vq_loss + q.reg_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    assert min(times) < 0.5


def test_autoencoder_baseline_and_no_regularizer() -> None:
    cfg = dataclasses.replace(PRESETS["tiny"], use_vq=False)
    model = SOVQAE(cfg)
    assert model.quantizer is None
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y, q = model(x)
    assert y.shape == x.shape and q.indices is None and q.distances is None
    assert float(q.vq_loss) == 0 and float(q.reg_loss) == 0
    assert torch.equal(q.z_q, q.z)
    no_reg = SOVQAE(dataclasses.replace(PRESETS["tiny"], reg_weight=0.0))
    assert no_reg.quantizer is not None  # reg_weight=0 is a VQ-AE; the trainer skips the term


def test_bf16_autocast_forward() -> None:
    model = SOVQAE(PRESETS["tiny"]).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, q = model(x)
    assert y.shape == x.shape and q.distances is not None
    assert q.distances.dtype == torch.float32


def test_config_validation_and_dict_roundtrip() -> None:
    with pytest.raises(InputError, match="multiple"):
        ModelConfig(resolution=50, channel_mult=(1, 2, 2))
    cfg = PRESETS["cpu64"]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_estimate_lipschitz() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    assert estimate_lipschitz(lambda v: 3.0 * v, x, n=2) == pytest.approx(3.0, rel=1e-4)
    # a linear map with different gains: the power iteration finds the largest
    w = torch.tensor([0.5, 4.0, 1.0]).view(1, 3, 1, 1)
    est = estimate_lipschitz(lambda v: v * w, x, n=2, power_iters=5)
    assert est == pytest.approx(4.0, rel=1e-2)
    model = SOVQAE(PRESETS["tiny"]).eval()
    lip = estimate_lipschitz(model.encode, x.new_zeros(1, 3, 32, 32).uniform_(-1, 1), n=2)
    assert 0 < lip < 1e4
