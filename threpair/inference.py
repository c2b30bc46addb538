"""A trained identity model as the restore pipeline's FaceModel: crops in, repaired crops out.

    model = IdentityModel.load("checkpoints/alice.safetensors", device="auto")
    repaired = model(crops)          # uint8 RGB (B, S, S, 3) -> same; batch = frames in order

Batches are consecutive frames of one video, in time order: code hysteresis (keep last
frame's code at a latent position unless the new nearest code is clearly nearer) carries
from one call to the next. Call `reset()` where the sequence breaks (a new video, the face
lost). Per-frame confidence from the theory is recorded in `frame_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from threpair import checkpoint
from threpair.config import CropConfig
from threpair.model import SOVQAE, ModelConfig
from threpair.quantize import QuantizeResult, delta_min

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX); emulated bf16 is slow."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check is not None and check()) or (amx is not None and amx()))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """ "auto" -> fp16 on CUDA, bf16 on CPUs that have it, else fp32 (None = no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        else:
            precision = "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 inference needs CUDA; use bf16 or fp32 on the CPU")
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class FrameStats:
    """Confidence of one repaired crop.

    `outside`: share of latent positions whose distance to their code exceeds delta_min / 2
    (outside the region where the theory guarantees the clean code is chosen).
    `margin`: mean of (delta_min / 2 - distance) over positions (negative = outside on average).
    `kept`: share of positions where hysteresis kept the previous frame's code.
    """

    outside: float
    margin: float
    kept: float


class IdentityModel:
    """SOVQAE inference with hysteresis and confidence.

    `precision`: "auto" runs the network under fp16 autocast on CUDA and bf16 autocast on
    CPUs with native bf16 (measured 1.3-2.5x faster than fp32 on this project's AVX512-BF16
    machines with the retired 64-px presets, outputs 39-41 dB PSNR from fp32's; `python
    bench/precision.py --model CKPT` measures a checkpoint), else fp32.
    Code assignment is fp32 in every mode (quantize.py).
    """

    def __init__(
        self,
        model: SOVQAE,
        cfg: ModelConfig,
        metadata: dict,
        device: torch.device,
        hysteresis: float = 0.0,
        precision: str = "auto",
    ) -> None:
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.metadata = metadata
        self.device = device
        self.resolution: int | None = cfg.resolution
        crop = metadata.get("crop")
        self.crop: CropConfig | None = CropConfig.from_dict(crop) if crop else None
        self.hysteresis = hysteresis
        self.frame_stats: list[FrameStats] = []
        self.last_stats: list[FrameStats] = []
        theory = metadata.get("training", {}).get("theory", {})
        # Share of positions outside delta_min / 2 on clean training crops: the baseline that
        # per-frame confidence is judged against.
        self.outside_baseline = 1.0 - float(theory.get("within_radius") or 0.0)
        if self.model.quantizer is not None:
            self.delta_min = float(delta_min(self.model.quantizer.embeddings().detach().float()))
        else:
            self.delta_min = float("nan")
        self._prev: torch.Tensor | None = None
        self.autocast_dtype = resolve_precision(precision, device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "auto",
        hysteresis: float = 0.0,
        precision: str = "auto",
    ) -> IdentityModel:
        """Load a checkpoint; `hysteresis` is the code-switch margin as a fraction of delta_min."""
        dev = resolve_device(device)
        model, cfg, metadata = checkpoint.load(path, device=dev)
        return cls(model, cfg, metadata, dev, hysteresis, precision)

    def reset(self) -> None:
        """Forget the previous frame's codes (the next crop starts a new sequence)."""
        self._prev = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (B, S, S, 3) -> repaired uint8 crops, same shape."""
        if crops.ndim != 4 or crops.shape[1:] != (self.resolution, self.resolution, 3):
            raise ValueError(
                f"crops must be uint8 (B, {self.resolution}, {self.resolution}, 3), "
                f"got {crops.shape}"
            )
        if not crops.flags.writeable:  # e.g. a memory-mapped crop cache
            crops = crops.copy()
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        y = self.run_tensor(x.permute(0, 3, 1, 2).float())
        return y.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, 3, S, S) crops in 0-255 on `device` -> repaired crops, same form.

        The restore pipeline's device path (geometry_torch) calls this directly, so crops
        stay on the GPU from warp to paste; `__call__` wraps it for numpy crops.
        """
        if x.ndim != 4 or x.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(
                f"crops must be (B, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}"
            )
        x = x.float().div(127.5).sub_(1.0)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        amp = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            z = self.model.encode(x)
            q = self._quantize_sequence(z)
            y = self.model.combine(x, self.model.decode(q.z_q))
        if q.indices is not None:
            self._prev = q.indices[-1]
            self._record(q)
        return y.float().clamp_(-1, 1).add_(1.0).mul_(127.5)

    def _quantize_sequence(self, z: torch.Tensor) -> QuantizeResult:
        """Quantize a batch of consecutive frames, chaining hysteresis through it.

        The first frame of a sequence has no predecessor: it gets plain 1-NN, and the rest of
        the batch chains from it, so results do not depend on how frames are batched.
        """
        if self.hysteresis <= 0 or self.model.quantizer is None:
            return self.model.quantize(z)
        margin = self.hysteresis * self.delta_min
        if self._prev is not None:
            return self.model.quantize(z, prev_indices=self._prev, margin=margin)
        first = self.model.quantize(z[:1])
        if len(z) == 1:
            return first
        rest = self.model.quantize(z[1:], prev_indices=first.indices[0], margin=margin)
        cat = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
        return replace(
            rest,
            z_q=torch.cat([first.z_q, rest.z_q]),
            z=torch.cat([first.z, rest.z]),
            indices=cat(first.indices, rest.indices),
            distances=cat(first.distances, rest.distances),
            gap=cat(first.gap, rest.gap),
            kept=cat(first.kept, rest.kept),
        )

    def _record(self, q: QuantizeResult) -> None:
        half = float(q.delta_min) / 2
        dist = q.distances.float().flatten(1)
        kept = q.kept.float().flatten(1) if q.kept is not None else torch.zeros_like(dist)
        outside = (dist > half).float().mean(1).cpu().numpy()
        margin = (half - dist).mean(1).cpu().numpy()
        kept_share = kept.mean(1).cpu().numpy()
        self.last_stats = [
            FrameStats(float(o), float(m), float(k)) for o, m, k in zip(outside, margin, kept_share)
        ]
        self.frame_stats += self.last_stats
