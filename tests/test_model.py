"""SOVQAE: presets build with the documented shapes; AE baseline; Lipschitz estimate."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from threpair.bands import area_down, grid_for, high_pass, low_pass
from threpair.errors import InputError
from threpair.generators import low_grid
from threpair.model import (
    PRESETS,
    SOVQAE,
    AttnBlock,
    ModelConfig,
    estimate_lipschitz,
    get_preset,
    num_parameters,
)

# parameter counts (millions) the presets are designed around; a change here is deliberate
EXPECTED_MPARAMS = {"tiny": 0.175, "small": 1.02, "base": 16.0, "hd": 16.0}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_presets_and_get_preset() -> None:
    assert set(PRESETS) == {"tiny", "small", "base", "hd"}  # the 64/128-px stand-ins retired
    assert get_preset("small") is PRESETS["small"]
    with pytest.raises(InputError, match="tiny.*small"):
        get_preset("cpu64")
    assert PRESETS["small"].resolution == PRESETS["base"].resolution == 256
    assert PRESETS["hd"].resolution == 2 * PRESETS["base"].resolution
    for name in ("small", "base", "hd"):  # the low band on the reference engine's grid
        cfg = PRESETS[name]
        assert cfg.output == "band" and cfg.band_grid == low_grid(96, 1.5)


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts(name: str) -> None:
    model = SOVQAE(PRESETS[name])
    assert num_parameters(model) / 1e6 == pytest.approx(EXPECTED_MPARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_forward_shapes_and_dtypes(name: str) -> None:
    cfg = PRESETS[name]
    model = SOVQAE(cfg).eval()
    s, h = cfg.resolution, cfg.latent_resolution
    x = torch.rand(2 if name == "tiny" else 1, 3, s, s) * 2 - 1
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
    torch.testing.assert_close(model.combine(x, model.decode(q.z_q)), y)


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
    cfg = PRESETS["small"]
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


@pytest.mark.parametrize("size", [32, 24, 16])
def test_band_split_keeps_the_input_low_band(size: int) -> None:
    """The output's low band (area resize to the band grid) is the input's: exactly, up to
    float rounding (tolerance 1e-4 in [-1, 1] units, i.e. 0.013 uint8 levels), whatever the
    (here untrained, so arbitrary) decoder outputs, on whole crops and on smaller patches."""
    torch.manual_seed(0)
    model = SOVQAE(PRESETS["tiny"]).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        y, _ = model(x)
    g = grid_for(size, model.cfg.band_grid, model.cfg.resolution)
    assert g == model.band_grid_for(size) and 2 <= g < size
    assert (y - x).abs().max() > 0.05  # the decoder did change the crop ...
    torch.testing.assert_close(area_down(y, g), area_down(x, g), atol=1e-4, rtol=0)  # ... not there
    full = SOVQAE(dataclasses.replace(PRESETS["tiny"], output="full")).eval()
    with torch.no_grad():
        yf, q = full(x)
    torch.testing.assert_close(yf, full.decode(q.z_q))  # full re-generation: the decoder's
    assert (area_down(yf, g) - area_down(x, g)).abs().max() > 1e-2


def test_low_pass_is_a_projection_that_keeps_the_area_band() -> None:
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    for grid in (5, 9, 13):
        low = low_pass(x, grid)
        torch.testing.assert_close(low_pass(low, grid), low)
        torch.testing.assert_close(area_down(low, grid), area_down(x, grid))
        assert area_down(high_pass(x, grid), grid).abs().max() < 1e-9
    with pytest.raises(InputError, match="square"):
        low_pass(torch.zeros(1, 3, 8, 9), 4)


def test_windowed_attention_is_attention_within_each_window() -> None:
    torch.manual_seed(0)
    win = AttnBlock(8, window=4).eval()
    glob = AttnBlock(8).eval()
    glob.load_state_dict(win.state_dict())
    win.norm = glob.norm = torch.nn.Identity()  # GroupNorm is per image: compare without it
    x = torch.randn(1, 8, 8, 12)
    with torch.no_grad():
        y = win(x)
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                part = x[..., i : i + 4, j : j + 4]
                torch.testing.assert_close(y[..., i : i + 4, j : j + 4], glob(part))
        assert win(torch.randn(1, 8, 6, 10)).shape == (1, 8, 6, 10)  # padded, cropped back


def test_whole_crops_run_through_a_patch_trained_network() -> None:
    """Fully convolutional: the same weights take patches (training) and whole crops (restore)."""
    cfg = PRESETS["base"]
    model = SOVQAE(cfg).eval()
    f = cfg.downsample_factor
    with torch.no_grad():
        for size in (8 * f, 16 * f):  # a patch of one attention window, and of four
            y, q = model(torch.zeros(1, 3, size, size))
            assert y.shape == (1, 3, size, size) and q.indices.shape == (1, size // f, size // f)


def test_configs_written_before_the_band_split_load_as_full_regeneration() -> None:
    old = PRESETS["tiny"].to_dict()
    for key in ("output", "band_grid", "attn_window"):
        old.pop(key)
    cfg = ModelConfig.from_dict(old)
    assert cfg.output == "full" and cfg.attn_window == 0
    with pytest.raises(InputError, match="output"):
        ModelConfig.from_dict({**PRESETS["tiny"].to_dict(), "output": "both"})


def test_band_split_trains_after_an_inference_run() -> None:
    """A network run in inference mode (a restore) and then trained in the same process: the
    cached low-band projection must not be an inference tensor (backward would refuse it)."""
    grid = 7  # a grid no other test uses, so the cache entry is made here, in inference mode
    with torch.inference_mode():
        low_pass(torch.rand(1, 3, 28, 28), grid)
    x = torch.rand(1, 3, 28, 28, requires_grad=True)
    low_pass(x, grid).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
