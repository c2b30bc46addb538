"""Training losses: reconstruction, perceptual (when weights are local), patch GAN, fallbacks.

Images are (B, 3, H, W) RGB in [-1, 1]. The perceptual loss needs VGG16 weights, which cannot be
downloaded here and torchvision is not a dependency, so VGG16's feature layers are built in
plain torch and a torchvision-format state dict is loaded from a local file when one exists.
Without it, training uses losses that need no pretrained network (an FFT amplitude loss, and
discriminator feature matching once the GAN is on). `active_losses` says which ones run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from threpair.errors import InputError

VGG16_FILENAME = "vgg16-397923af.pth"  # torchvision's name in the torch hub cache


@dataclass(frozen=True)
class LossConfig:
    rec: str = "l2"  # "l2" (the paper) or "l1"
    rec_weight: float = 1.0
    perceptual_weight: float = 1.0  # used only when VGG16 weights are found locally
    vgg_path: str | None = None  # torchvision vgg16 state dict; default: the torch hub cache
    lpips_path: str | None = None  # LPIPS linear-layer weights (lpips' vgg.pth); optional
    fft_weight: float = 0.1  # FFT amplitude loss, used when there is no perceptual network
    disc_weight: float = 0.1  # multiplies the adaptive GAN weight; 0 = no GAN at all
    fm_weight: float = 1.0  # discriminator feature matching (no perceptual network only)
    disc_channels: int | None = None  # None: the model's base_channels (VQGAN uses 64)
    disc_layers: int = 3

    def __post_init__(self) -> None:
        if self.rec not in ("l1", "l2"):
            raise InputError(f"reconstruction loss must be 'l1' or 'l2', got {self.rec!r}")


def reconstruction_loss(x_rec: Tensor, x: Tensor, kind: str = "l2") -> Tensor:
    """Mean L1 or L2 pixel loss, computed in fp32."""
    diff = x_rec.float() - x.float()
    return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()


def fft_loss(x_rec: Tensor, x: Tensor) -> Tensor:
    """L1 distance of 2-D FFT amplitudes. Blur removes high-frequency energy; this loss asks for
    it back, and being phase-free it does not average over small misalignments like L2 does."""
    fr = torch.fft.rfft2(x_rec.float(), norm="ortho").abs()
    fx = torch.fft.rfft2(x.float(), norm="ortho").abs()
    return (fr - fx).abs().mean()


# ----------------------------------------------------------------------------- perceptual

# VGG16 "features" (torchvision indices kept so its state dict loads as is); LPIPS taps the
# ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_VGG16_CFG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
]  # fmt: skip
_VGG16_TAPS = (3, 8, 15, 22, 29)


class VGG16Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG16_TAPS:
                taps.append(x)
        return taps


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on frozen VGG16 features: unit-normalise channels, squared difference,
    weighted by LPIPS' learned linear layers when given, else a plain channel mean."""

    def __init__(self, vgg: VGG16Features, lin: list[Tensor] | None = None) -> None:
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        # LPIPS input scaling for [-1, 1] images
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.lin = (
            None
            if lin is None
            else nn.ParameterList([nn.Parameter(w, requires_grad=False) for w in lin])
        )

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # frozen network: never in training mode
        return self

    def forward(self, x_rec: Tensor, x: Tensor) -> Tensor:
        fr = self.vgg((x_rec.float() - self.shift) / self.scale)
        fx = self.vgg((x.float() - self.shift) / self.scale)
        total = x_rec.new_zeros((), dtype=torch.float32)
        for i, (a, b) in enumerate(zip(fr, fx, strict=True)):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            d = (a - b).pow(2)
            d = F.conv2d(d, self.lin[i]) if self.lin is not None else d.mean(1, keepdim=True)
            total = total + d.mean()
        return total


def _default_vgg_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _default_lpips_path() -> Path | None:
    spec = importlib.util.find_spec("lpips")  # the lpips package ships its linear weights
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"


def load_perceptual(
    vgg_path: str | Path | None = None, lpips_path: str | Path | None = None
) -> tuple[PerceptualLoss | None, str]:
    """(loss module or None, one-line description of what was loaded or why not).

    An explicitly given path that is missing or unreadable raises InputError; missing weights at
    the default locations (the torch hub cache, the lpips package) just return None.
    """
    explicit = vgg_path is not None
    path = Path(vgg_path) if explicit else _default_vgg_path()
    if not path.is_file():
        if explicit:
            raise InputError(
                f"VGG16 weights not found at {path}: pass torchvision's {VGG16_FILENAME}"
            )
        return None, f"no VGG16 weights at {path}"
    vgg = VGG16Features()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        vgg.features.load_state_dict(feats)
    except (RuntimeError, OSError, AttributeError, KeyError) as e:
        raise InputError(f"{path}: not a torchvision VGG16 state dict ({e})") from e
    lin = None
    lp = Path(lpips_path) if lpips_path is not None else _default_lpips_path()
    if lp is not None and lp.is_file():
        try:
            lstate = torch.load(lp, map_location="cpu", weights_only=True)
            lin = [lstate[f"lin{i}.model.1.weight"].float() for i in range(len(_VGG16_TAPS))]
        except (RuntimeError, OSError, KeyError) as e:
            raise InputError(f"{lp}: not LPIPS VGG linear weights ({e})") from e
    elif lpips_path is not None:
        raise InputError(f"LPIPS weights not found at {lp}")
    kind = f"LPIPS (VGG16 {path}, linear {lp})" if lin is not None else f"VGG16 features ({path})"
    return PerceptualLoss(vgg, lin), kind


# ----------------------------------------------------------------------------- adversarial


class PatchDiscriminator(nn.Module):
    """pix2pix/VQGAN PatchGAN: one logit per overlapping patch. GroupNorm rather than BatchNorm,
    so the result does not depend on the batch split across DDP ranks."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2))
        ]
        cin = channels
        for n in range(1, n_layers + 1):
            cout = channels * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, 4, stride, 1, bias=False),
                    nn.GroupNorm(32 if cout % 32 == 0 else 1, cout),
                    nn.LeakyReLU(0.2),
                )
            )
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, 1, 4, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, 3, H, W) -> (patch logits (B, 1, h, w), intermediate features for matching)."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.head(x), feats


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (
        F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean()
    )


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    return -logits_fake.float().mean()


def feature_matching_loss(feats_fake: list[Tensor], feats_real: list[Tensor]) -> Tensor:
    """Mean L1 between discriminator features of restored and real images (real detached)."""
    losses = [
        (a.float() - b.detach().float()).abs().mean()
        for a, b in zip(feats_fake, feats_real, strict=True)
    ]
    return torch.stack(losses).mean()


def adaptive_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4
) -> Tensor:
    """VQGAN's balance: ||grad nll|| / ||grad g_loss|| at the decoder's last layer (detached),
    so the GAN term never dominates the reconstruction whatever their raw scales."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def gan_active(step: int, disc_start: int, cfg: LossConfig) -> bool:
    return cfg.disc_weight > 0 and step >= disc_start


def active_losses(
    cfg: LossConfig,
    perceptual_note: str,
    has_perceptual: bool,
    disc_start: int,
    use_vq: bool,
    beta: float,
    reg_weight: float,
    delta: float,
    dead_code_after: int,
) -> list[str]:
    """Human-readable list of the losses a training run uses (log it once at the start)."""
    out = [f"reconstruction: {cfg.rec.upper()} x{cfg.rec_weight:g}"]
    if has_perceptual and cfg.perceptual_weight > 0:
        out.append(f"perceptual: {perceptual_note} x{cfg.perceptual_weight:g}")
    else:
        why = perceptual_note if not has_perceptual else "perceptual_weight=0"
        out.append(f"perceptual: OFF ({why}; give vgg_path to enable)")
        if cfg.fft_weight > 0:
            out.append(f"fallback: FFT amplitude L1 x{cfg.fft_weight:g}")
    if use_vq:
        out.append(f"vq: codebook + commitment (beta={beta:g})")
        if reg_weight > 0:
            out.append(f"codebook regularizer: min-distance, delta={delta:g} x{reg_weight:g}")
        else:
            out.append("codebook regularizer: OFF (reg_weight=0, plain VQ-AE)")
        if dead_code_after > 0:
            out.append(f"dead-code restart: codes unused for {dead_code_after} steps")
    else:
        out.append("vq: OFF (plain autoencoder baseline)")
    if cfg.disc_weight > 0:
        out.append(
            f"adversarial: patch discriminator, hinge, adaptive weight x{cfg.disc_weight:g}, "
            f"from step {disc_start}"
        )
        if not has_perceptual and cfg.fm_weight > 0:
            out.append(f"fallback: discriminator feature matching x{cfg.fm_weight:g}, with the GAN")
    else:
        out.append("adversarial: OFF (disc_weight=0)")
    return out
