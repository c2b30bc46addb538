"""SOVQAE: an identity-specific VQGAN-style autoencoder, built from one dataclass config.

Conventions for every public entry point: images are float tensors (B, 3, H, W), RGB, values in
[-1, 1] (uint8 / 127.5 - 1), square, H a multiple of `cfg.downsample_factor` (the network is
fully convolutional: trained on patches, run on whole crops of `cfg.resolution`); the output
is not clamped (clamp to [-1, 1] before converting back to uint8). Latents are
(B, code_dim, H / f, W / f) with f = `cfg.downsample_factor`. dtype: fp32 weights; run under
torch.autocast for fp16/bf16.

Architecture (the paper's appendix, VQGAN-like). Encoder: conv, residual blocks with
downsampling between levels, then residual block, self-attention block, residual block,
GroupNorm + Swish + conv. The decoder mirrors it. The attention is windowed
(`attn_window` latent cells; 0 = global over the whole input, the paper's non-local block):
a global block would see a training patch at training and a whole crop at restore, so it
would not behave the same on both; windows of the same size do.

Output (`cfg.output`): "band" (the default) = low_pass(input) + high_pass(decoder output) on
the grid `band_grid` (bands.py): the input's low band, the generator's mouth shape, passes
through exactly and the codebook holds only the person's high-band texture. "full" = the
decoder output itself, the paper's full re-generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from threpair.bands import grid_for, high_pass, low_pass
from threpair.errors import InputError
from threpair.quantize import QuantizeResult, VectorQuantizer


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; saved in each checkpoint's header."""

    resolution: int = 64  # square crop size in pixels (whole crops at restore)
    in_channels: int = 3
    base_channels: int = 64
    # one entry per level; downsample_factor = 2 ** (len(channel_mult) - 1)
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1  # per level (the decoder uses one more, as in VQGAN)
    attention: bool = True  # self-attention block in the bottleneck (both sides)
    attn_window: int = 0  # attention within windows of this many latent cells; 0 = global
    code_dim: int = 64  # D: channels of a latent vector / codebook entry
    codebook_size: int = 512  # K
    use_vq: bool = True  # False: same network without quantization (plain AE baseline)
    normalize_latents: bool = True  # L2-normalise latents and codes (sets the scale of delta)
    beta: float = 0.25  # commitment weight in the VQ loss
    # lower bound for each code's distance to its nearest other code, in chord distance on the
    # unit sphere when normalize_latents (sqrt(2) = orthogonal); paper: delta=1 beat delta=2
    delta: float = 0.5
    reg_weight: float = 1.0  # weight of the min-distance regularizer; 0 = plain VQ-AE
    dead_code_after: int = 100  # restart a code unused for this many steps; 0 = never
    dropout: float = 0.0
    # "band": output = low_pass(input) + high_pass(decoder); "full": the decoder output
    output: str = "band"
    # cells of the low-band grid across a whole crop of `resolution` px: generators.low_grid
    # of the generator the identity is for (Wav2Lip: 96 px over a 1.5-box crop -> 72)
    band_grid: int = 72

    def __post_init__(self) -> None:
        if not self.channel_mult:
            raise InputError("channel_mult needs at least one level")
        f = self.downsample_factor
        if self.resolution <= 0 or self.resolution % f:
            raise InputError(
                f"resolution {self.resolution} must be a positive multiple of the downsampling "
                f"factor {f} (2 ** (len(channel_mult) - 1))"
            )
        if self.codebook_size < 2 or self.code_dim < 1 or self.base_channels < 1:
            raise InputError("codebook_size must be >= 2, code_dim and base_channels >= 1")
        if self.delta < 0 or self.reg_weight < 0 or self.beta < 0:
            raise InputError("delta, reg_weight and beta must be >= 0")
        if self.output not in ("band", "full"):
            raise InputError(f"output {self.output!r}: use 'band' (band split) or 'full'")
        if not 2 <= self.band_grid <= self.resolution or self.attn_window < 0:
            raise InputError(
                f"band_grid {self.band_grid} must be between 2 and the resolution "
                f"{self.resolution}; attn_window >= 0"
            )

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_resolution(self) -> int:
        return self.resolution // self.downsample_factor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise InputError (a config from another version).

        Configs written before the band split (no "output" key) were full re-generation
        networks with global attention: they load as such."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown}: written by another threpair?")
        d = dict(d)
        if "output" not in d:
            d["output"] = "full"
            d.setdefault("band_grid", max(2, min(72, int(d.get("resolution", 64)))))
        if "channel_mult" in d:
            d["channel_mult"] = tuple(int(m) for m in d["channel_mult"])
        return cls(**d)


# The real scale: 256-px crops (the face box, 1.5 crops wide, at ~171 px) and a Wav2Lip-like
# generator that rendered the face box at 96 px: the low band on generators.low_grid(96, 1.5)
# = 72 cells passes through, the network adds what lies above it. f = 8: with the band
# split the codes carry only high-band texture, 8 x 8-px cells of it (the paper's f = 16
# re-generated the whole face from 16 x 16-px cells). Windowed attention (8 x 8 latent
# cells = 64 px) behaves alike on training patches and whole crops.
_BASE = ModelConfig(
    resolution=256,
    base_channels=64,
    channel_mult=(1, 2, 2, 4),
    num_res_blocks=2,
    attn_window=8,
    code_dim=64,
    codebook_size=1024,
    band_grid=72,
)

PRESETS: dict[str, ModelConfig] = {
    # tests only: a training step in a few tens of ms on one core (32 px; the generator
    # scaled down with it: 12 px over the face box, low band on 9 cells)
    "tiny": ModelConfig(
        resolution=32,
        base_channels=16,
        channel_mult=(1, 2),
        attn_window=4,
        code_dim=16,
        codebook_size=64,
        dead_code_after=20,
        band_grid=9,
    ),
    # the real scale that a CPU can at least train (tests, small jobs): 256 px, f = 4,
    # 512 codes of dim 64, no attention, ~0.7M parameters (design notes: ~0.75 steps/s on
    # 64-px patches, batch 16, one core)
    "small": ModelConfig(
        resolution=256,
        base_channels=32,
        channel_mult=(1, 2, 2),
        attention=False,
        code_dim=64,
        codebook_size=512,
        band_grid=72,
    ),
    # GPU: 256 px (see _BASE)
    "base": _BASE,
    # GPU: 512 px crops (faces of 1080p video at their own pixels), the same network and
    # cells per pixel: 64 x 64 latents, 4x base's compute per crop
    "hd": replace(_BASE, resolution=512),
}


def get_preset(name: str) -> ModelConfig:
    """The named preset; InputError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(
            f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}"
        ) from None


# ----------------------------------------------------------------------------- building blocks


def _norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in VQGAN; fewer for the narrow test preset (groups must divide channels)
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions (window 0), or within
    non-overlapping windows of `window` x `window` positions (inputs not a multiple of the
    window are padded by replication; the padding is cropped off again)."""

    def __init__(self, channels: int, window: int = 0) -> None:
        super().__init__()
        self.window = window
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))
        win = self.window
        if win <= 0 or (h <= win and w <= win):
            q, k, v = qkv.reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
            y = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
            return x + self.proj(y.transpose(-1, -2).reshape(b, c, h, w))
        ph, pw = -h % win, -w % win
        if ph or pw:
            qkv = F.pad(qkv, (0, pw, 0, ph), mode="replicate")
        nh, nw = (h + ph) // win, (w + pw) // win
        # (b, 3c, nh*win, nw*win) -> (b*nh*nw, 3, 1, win*win, c)
        t = qkv.reshape(b, 3, c, nh, win, nw, win).permute(0, 3, 5, 1, 4, 6, 2)
        q, k, v = t.reshape(b * nh * nw, 3, 1, win * win, c).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (b*nh*nw, 1, win*win, c)
        y = y.reshape(b, nh, nw, win, win, c).permute(0, 5, 1, 3, 2, 4)
        y = y.reshape(b, c, nh * win, nw * win)[:, :, :h, :w]
        return x + self.proj(y)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, attention: bool, window: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        ResBlock(channels, channels, dropout),
        AttnBlock(channels, window) if attention else nn.Identity(),
        ResBlock(channels, channels, dropout),
    )


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        blocks: list[nn.Module] = []
        cin = cfg.base_channels
        for i, cout in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, cout, cfg.dropout))
                cin = cout
            if i < len(ch) - 1:
                blocks.append(Downsample(cin))
        self.down = nn.Sequential(*blocks)
        self.mid = _mid(cin, cfg.attention, cfg.attn_window, cfg.dropout)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.code_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        cin = ch[-1]
        self.conv_in = nn.Conv2d(cfg.code_dim, cin, 3, padding=1)
        self.mid = _mid(cin, cfg.attention, cfg.attn_window, cfg.dropout)
        blocks: list[nn.Module] = []
        for i in reversed(range(len(ch))):
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(cin, ch[i], cfg.dropout))
                cin = ch[i]
            if i > 0:
                blocks.append(Upsample(cin))
        self.up = nn.Sequential(*blocks)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------- the model

# the band network's output layer starts at this fraction of its default init (1 = the
# default). Measured on anchor_de_20s (small, 256 px, CPU): with 0 (start exactly at the
# input's low band) the codebook collapsed within 20 steps (0.4% of codes used), with 1 by
# step 40 (0.6%): the init is not the cause; train.TrainConfig.aux_full_weight is the cure
BAND_INIT_SCALE = 1.0


class SOVQAE(nn.Module):
    """Space-optimized VQ autoencoder. Randomly initialised: use `checkpoint.load` for weights."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.output == "band" and BAND_INIT_SCALE != 1.0:
            with torch.no_grad():
                self.decoder.conv_out.weight.mul_(BAND_INIT_SCALE)
                self.decoder.conv_out.bias.zero_()
        self.quantizer: VectorQuantizer | None = None
        if cfg.use_vq:
            self.quantizer = VectorQuantizer(
                cfg.codebook_size,
                cfg.code_dim,
                beta=cfg.beta,
                delta=cfg.delta,
                normalize=cfg.normalize_latents,
                dead_after=cfg.dead_code_after,
            )

    @property
    def last_layer(self) -> Tensor:
        """Weight of the decoder's output conv (for the VQGAN adaptive GAN weight)."""
        return self.decoder.conv_out.weight

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> latents z (B, code_dim, H/f, W/f), unit-norm per position
        when `cfg.normalize_latents` (normalised in fp32)."""
        z = self.encoder(x)
        if self.cfg.normalize_latents:
            z = F.normalize(z.float(), dim=1)
        return z

    def quantize(
        self, z: Tensor, prev_indices: Tensor | None = None, margin: float = 0.0
    ) -> QuantizeResult:
        """Snap latents to their nearest codes; see `VectorQuantizer.forward` for the hysteresis
        arguments. Without VQ (`use_vq=False`) z passes through and the losses are 0."""
        if self.quantizer is None:
            zero = z.new_zeros((), dtype=torch.float32)
            return QuantizeResult(
                z_q=z,
                z=z,
                indices=None,
                vq_loss=zero,
                reg_loss=zero,
                distances=None,
                gap=None,
                kept=None,
                delta_min=torch.full((), float("nan"), device=z.device),
            )
        return self.quantizer(z, prev_indices=prev_indices, margin=margin)

    def decode(self, z_q: Tensor) -> Tensor:
        """(B, code_dim, h, w) -> the decoder's images (B, 3, h*f, w*f), nominally in [-1, 1]
        (not clamped). For a band-split network this is only its high band's source: pass
        it through `combine` with the input."""
        return self.decoder(z_q)

    def band_grid_for(self, size: int) -> int:
        """Low-band grid of an input `size` px wide (a patch has the crop's cells per pixel)."""
        return grid_for(size, self.cfg.band_grid, self.cfg.resolution)

    def combine(self, x: Tensor, decoded: Tensor) -> Tensor:
        """The network's output from its input x and its decoder's images (both (B, 3, S, S)):
        band split: low_pass(x) + high_pass(decoded), in fp32, so area_down(output, grid)
        equals area_down(x, grid) up to float rounding; full: `decoded` itself."""
        if self.cfg.output == "full":
            return decoded
        g = self.band_grid_for(int(x.shape[-1]))
        return low_pass(x.float(), g) + high_pass(decoded.float(), g)

    def forward(
        self,
        x: Tensor,
        prev_indices: Tensor | None = None,
        margin: float = 0.0,
        with_decoded: bool = False,
    ) -> tuple[Tensor, QuantizeResult] | tuple[Tensor, QuantizeResult, Tensor]:
        """(B, 3, S, S) in [-1, 1] -> (output (B, 3, S, S), QuantizeResult); with_decoded:
        also the decoder's own images (training's auxiliary loss)."""  # fmt: skip
        q = self.quantize(self.encode(x), prev_indices=prev_indices, margin=margin)
        decoded = self.decode(q.z_q)
        out = self.combine(x, decoded)
        return (out, q, decoded) if with_decoded else (out, q)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def estimate_lipschitz(
    encoder: Callable[[Tensor], Tensor],
    x: Tensor,
    n: int = 8,
    rms: float = 0.02,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
) -> float:
    """Empirical Lipschitz constant of `encoder` around images x (B, 3, H, W) in [-1, 1].

    L = max over images and `n` perturbations d of ||E(x+d) - E(x)|| / ||d||, norms over the
    whole image and the whole latent (the paper's statement of the bound). Each d starts as
    Gaussian noise of per-pixel RMS `rms` and is then turned toward the locally most amplified
    direction by `power_iters` steps of gradient ascent on ||E(x+d) - E(x)||^2 at fixed ||d||
    (a finite-difference power iteration). This is a lower bound of the true constant, so an
    NRoUB computed from it is optimistic.
    """
    x = x.float()
    base = encoder(x).float()
    best = 0.0
    for _ in range(n):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = noise * rms
        radius = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        for _ in range(power_iters):
            with torch.enable_grad():
                d = d.detach().requires_grad_(True)
                obj = (encoder(x + d).float() - base).pow(2).sum()
                (g,) = torch.autograd.grad(obj, d)
            gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-20)
            d = g / gn * radius
        ratio = (encoder(x + d).float() - base).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
        best = max(best, float(ratio.max()))
    return best
