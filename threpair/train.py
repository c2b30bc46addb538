"""Train an identity-specific SOVQAE on face crops: one explicit loop (nanoGPT style).

Per step: sample a batch (clean crops as targets; generator-like degraded copies as inputs when
`degrade_inputs`: the face box rendered at about `gen_res` px plus blur, noise, JPEG, colour and
shift; then random `patch_size` patches of both, centred in the face box), reconstruction +
perceptual-or-fallback + VQ + regularizer (+ GAN after `disc_start`), AMP (bf16 on GPUs that
have it, else fp16 + GradScaler; fp32 on CPU), channels_last and optional torch.compile on
CUDA, gradient clipping, EMA of weights, dead-code restart. Batches are made by `workers`
DataLoader processes on the host's cores (a pure function of the step, so workers change
nothing but speed). Periodically: validation of the EMA model on whole crops at the real
degradation (`generators.simulate`: the face box rendered at `gen_res`), a sample grid PNG, a
resumable state file; a plateau detector stops the run when validation has not improved by
`min_improvement` dB for `patience` validations. At the end: the theory numbers (delta_min,
eps_max, L, NRoUB) and the EMA model written with `checkpoint.save`.

Determinism: batch indices, degradations and code restarts depend only on (seed, step, rank),
and the state file holds everything else, so a resumed run is bit-identical to an uninterrupted
one on CPU. DDP: launch with torchrun; each rank samples from its own shard of the crops with
`batch_size` crops per step; only rank 0 validates and writes files.

Files next to `out_path` (e.g. alice.safetensors): alice.state.pt (resume state; deleted by
nobody, small enough to keep) and alice.samples.png (rows: degraded | restored | real).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from threpair import checkpoint
from threpair.bands import area_down
from threpair.config import CropConfig
from threpair.degrade import random_degradation
from threpair.errors import CheckpointError, InputError
from threpair.generators import crop_box, simulate
from threpair.losses import (
    LossConfig,
    PatchDiscriminator,
    active_losses,
    adaptive_weight,
    feature_matching_loss,
    fft_loss,
    gan_active,
    hinge_d_loss,
    hinge_g_loss,
    load_perceptual,
    reconstruction_loss,
)
from threpair.model import SOVQAE, ModelConfig, estimate_lipschitz, num_parameters
from threpair.quantize import codebook_usage

STATE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # stop after this many steps ...
    minutes: float | None = None  # ... or after this much wall time, whichever comes first
    batch_size: int = 8  # per rank
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.9)  # VQGAN's Adam betas (stable with a GAN)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # with warm-up: min(decay, (1 + step) / (10 + step))
    seed: int = 0
    degrade_inputs: bool = True  # False: the paper's way (clean crops in, clean crops out)
    # the generator's face-box render resolution (the reference engine's --generator), used
    # for training degradations and validation; None: default_gen_res (Wav2Lip's 96 px)
    gen_res: int | None = None
    gen_res_jitter: float = 0.25  # training draws gen_res from gen_res * (1 +- jitter)
    margin: float = 1.5  # crop side in face boxes (where the generator's box lies)
    patch_size: int = 0  # train on random patches of this size (px); 0 = whole crops
    workers: int = 0  # DataLoader processes that make the batches; 0 = in the loop
    compile: bool = False  # torch.compile the network's training forward (CUDA)
    channels_last: bool = True  # channels_last memory format on CUDA
    # band networks: weight of an L2 loss on the decoder's own full image (before the band
    # split). Without it the high band alone gives the encoder too little signal and the
    # codebook collapses (anchor_de_20s, small: 0.6% of codes used at step 40); with it the
    # codes keep describing the whole crop, as a full network's do. 0 = off
    aux_full_weight: float = 1.0
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    min_improvement: float = 0.05  # dB of validation face PSNR that count as improvement
    # random similarity jitter of each training crop (scale 1 +- j, shift +- j/2 of the side,
    # roll +- 50 j degrees), the same for input and target: restore frames its crops on the
    # degraded video, where the detector's box is a few % off. Measured on anchor_de_20s
    # (cpu64, 4 min): frame-level face PSNR 23.10 dB without, 24.87 with 0.1 (degraded 23.62)
    geo_jitter: float = 0.1
    hflip: bool = False  # faces are not symmetric (hair parting, lighting): off by default
    loss: LossConfig = field(default_factory=LossConfig)
    disc_start: int = 20_000  # GAN from this step (past a CPU run's length by default)
    val_every: int = 250
    val_max_crops: int = 64  # evenly spaced over the validation crops
    log_every: int = 25
    state_every: int = 250  # resumable state file every N steps (and at the end / Ctrl-C)
    sample_rows: int = 6  # sample grid rows (0 = no grid)
    theory_max_crops: int = 128  # training crops used for delta_min / eps_max at the end
    lipschitz_crops: int = 4
    lipschitz_samples: int = 4
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "auto"  # "auto" (fp16 on CUDA, fp32 on CPU) | "fp32" | "bf16" | "fp16" (CUDA)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise InputError("steps must be >= 0 and batch_size >= 1")
        if self.amp not in ("auto", "fp32", "bf16", "fp16"):
            raise InputError(f"amp must be auto, fp32, bf16 or fp16, got {self.amp!r}")
        if self.patch_size < 0 or self.workers < 0 or self.patience < 0:
            raise InputError("patch_size, workers and patience must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


# fields that change the trajectory: a resume with different values would not be a resume
_TRAJECTORY_FIELDS = (
    "batch_size", "lr", "betas", "warmup_steps", "grad_clip", "ema_decay", "seed",
    "degrade_inputs", "gen_res", "gen_res_jitter", "geo_jitter", "hflip", "loss",
    "disc_start", "amp", "margin", "patch_size", "aux_full_weight",
)  # fmt: skip


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int  # total steps done (including those before a resume)
    seconds: float  # total training wall time (including before a resume)
    stopped_by: str  # "steps", "minutes" or "plateau"
    val: dict[str, float]  # last validation
    history: list[dict[str, float]]  # all validations
    theory: dict[str, float]  # delta_min, eps_max, lipschitz, nroub, ... (see theory_numbers)
    losses: list[str]  # the active losses, human-readable
    resumed_from: int | None  # step the run resumed from, None for a fresh run


def state_path(out_path: Path) -> Path:
    return Path(out_path).with_suffix(".state.pt")


def samples_path(out_path: Path) -> Path:
    return Path(out_path).with_suffix(".samples.png")


def default_gen_res(resolution: int) -> int:
    """Wav2Lip's 96-px face box at the real scale (crops of 256 px and more); smaller test
    crops (the tiny preset) scale it down with them, so they still see a degradation."""
    return max(4, min(96, round(resolution * 96 / 256)))


def default_patch(resolution: int) -> int:
    """Training patch size for a preset: half the crop at the real scale (whole crops below)."""
    return resolution // 2 if resolution >= 256 else 0


# ----------------------------------------------------------------------------- data


def to_tensor(crops: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, S, S, 3) RGB -> float (N, 3, S, S) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> np.ndarray:
    """float (N, 3, S, S) in [-1, 1] -> uint8 (N, S, S, 3), rounded like the restore output."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of per-image PSNR (dB) of uint8 (N, H, W, 3) arrays; 100 for identical."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(err, 1e-10))))


def _step_rng(seed: int, step: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, rank])


def jitter_framing(crop: np.ndarray, rng: np.random.Generator, j: float) -> np.ndarray:
    """The crop re-framed by a random similarity (scale 1 +- j, shift +- j/2 of the side, roll
    +- 50 j degrees), edges replicated: framing errors like a detector's on a blurred face."""
    size = crop.shape[0]
    scale, dx, dy, roll = rng.uniform(-1, 1, 4) * (j, j / 2, j / 2, 50 * j)
    m = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), float(roll), 1 + float(scale))
    m[:, 2] += (dx * size, dy * size)
    return cv2.warpAffine(crop, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def sample_batch(
    crops: np.ndarray, cfg: TrainConfig, gen_res: int, step: int, rank: int, world: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) uint8 (B, P, P, 3) for this step; a pure function of (seed, step, rank).
    P = cfg.patch_size (whole crops when 0): whole crops are degraded (the generator's box
    needs the crop around it), then the same random patch, centred inside the face box, is
    cut from input and target.

    Each rank draws from its own shard (every world-th crop) so ranks see different data.
    """
    rng = _step_rng(cfg.seed, step, rank)
    shard = np.arange(rank % len(crops), len(crops), world)
    idx = shard[rng.integers(0, len(shard), cfg.batch_size)]
    target = crops[idx]
    if cfg.hflip:
        flip = rng.random(cfg.batch_size) < 0.5
        target = np.where(flip[:, None, None, None], target[:, :, ::-1], target)
    if cfg.geo_jitter > 0:
        target = np.stack([jitter_framing(c, rng, cfg.geo_jitter) for c in target])
    size = crops.shape[1]
    box = crop_box(CropConfig(size=size, margin=cfg.margin))
    if cfg.degrade_inputs:
        j = cfg.gen_res_jitter
        lo = max(2, math.floor(gen_res * (1 - j)))
        hi = max(lo, math.ceil(gen_res * (1 + j)))
        inputs = np.stack([random_degradation(c, rng, (lo, hi), box=box) for c in target])
    else:
        inputs = target
    p = cfg.patch_size
    if 0 < p < size:
        x0, y0, x1, y1 = (v * size for v in box)
        cx = rng.uniform(x0, x1, len(target))
        cy = rng.uniform(y0, min(y1, size), len(target))
        left = np.clip(np.round(cx - p / 2), 0, size - p).astype(int)
        top = np.clip(np.round(cy - p / 2), 0, size - p).astype(int)
        cut = lambda a: np.stack([a[i, t : t + p, l : l + p] for i, (t, l) in  # noqa: E731
                                  enumerate(zip(top, left))])  # fmt: skip
        inputs, target = cut(inputs), cut(target)
    return inputs, target


class StepBatches(torch.utils.data.Dataset):
    """Batch number `step` as uint8 tensors (inputs, targets) (B, P, P, 3): `sample_batch`
    behind a Dataset, so DataLoader workers on the host's cores can make them ahead of the
    GPU (the crops are shared with forked workers, not copied)."""

    def __init__(
        self, crops: np.ndarray, cfg: TrainConfig, gen_res: int, rank: int, world: int
    ) -> None:
        self.crops, self.cfg, self.gen_res, self.rank, self.world = crops, cfg, gen_res, rank, world

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        x, y = sample_batch(self.crops, self.cfg, self.gen_res, step, self.rank, self.world)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def batches(
    crops: np.ndarray,
    cfg: TrainConfig,
    gen_res: int,
    start: int,
    rank: int,
    world: int,
    pin: bool,
) -> Any:
    """Iterator over the batches of steps start, start + 1, ... (see StepBatches)."""  # fmt: skip
    ds = StepBatches(crops, cfg, gen_res, rank, world)
    if cfg.workers == 0:
        return (ds[i] for i in range(start, cfg.steps))
    return iter(
        torch.utils.data.DataLoader(
            ds, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.workers,
            pin_memory=pin, prefetch_factor=4, persistent_workers=False,
        )
    )  # fmt: skip


def _evenly(n_total: int, n_max: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total - 1, min(n_total, n_max)).round().astype(int))


def _data_fingerprint(crops: np.ndarray) -> str:
    h = hashlib.sha256(str(crops.shape).encode())
    for i in _evenly(len(crops), 256):
        h.update(crops[i].tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: SOVQAE,
    crops: np.ndarray,
    gen_res: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int = 32,
    margin: float = 1.5,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Validation numbers of `model` on whole uint8 crops, and (degraded, restored) images.

    The real degradation: the generator's face box (`margin` crops) rendered at `gen_res`
    (`generators.simulate`, as the identity's validation does). PSNRs in dB over the face
    box (outside it the degraded crop is the real one): psnr_degraded (degraded vs real),
    psnr_repair (restored from the degraded crop vs real), psnr_recon (clean crop through the
    model vs real); the same over the mouth (psnr_mouth_degraded, psnr_mouth_repair), and
    psnr_low_band: the restored crop against its degraded input on the network's low-band
    grid (how far the generated mouth shape moved; a band-split network keeps it, ~inf).
    For VQ models also code_agreement (fraction of positions where the degraded crop gets the
    clean crop's code), within_radius (fraction of degraded-input latents within delta_min/2
    of their code), and codebook usage on the clean crops.
    """
    from threpair.engines import region_masks
    from threpair.metrics import psnr

    was_training = model.training
    model.eval()
    size = crops.shape[1]
    crop = CropConfig(size=size, margin=margin)
    degraded = np.stack([simulate(c, gen_res, crop) for c in crops])
    restored, recon, agree, within, idx_all = [], [], [], [], []
    for s in range(0, len(crops), batch_size):
        xd = to_tensor(degraded[s : s + batch_size], device)
        xc = to_tensor(crops[s : s + batch_size], device)
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            yd, qd = model(xd)
            yc, qc = model(xc)
        restored.append(to_uint8(yd))
        recon.append(to_uint8(yc))
        if qd.indices is not None and qc.indices is not None and qd.distances is not None:
            agree.append((qd.indices == qc.indices).float().flatten().cpu())
            within.append((qd.distances < qd.delta_min / 2).float().flatten().cpu())
            idx_all.append(qc.indices.flatten().cpu())
    restored_np, recon_np = np.concatenate(restored), np.concatenate(recon)
    face, mouth = region_masks(size, crop)

    def mean(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> float:
        return float(np.mean([min(psnr(x, y, mask=mask), 100.0) for x, y in zip(a, b)]))

    grid = model.band_grid_for(size)
    low = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double()  # noqa: E731
    low_err = (area_down(low(restored_np), grid) - area_down(low(degraded), grid)).pow(2)
    low_mse = float(low_err.flatten(1).mean(1).clamp_min(1e-10).mean())
    out = {
        "psnr_degraded": mean(degraded, crops, face),
        "psnr_repair": mean(restored_np, crops, face),
        "psnr_recon": mean(recon_np, crops, face),
        "psnr_mouth_degraded": mean(degraded, crops, mouth),
        "psnr_mouth_repair": mean(restored_np, crops, mouth),
        "psnr_low_band": min(100.0, 10 * math.log10(255.0**2 / low_mse)),
    }
    if idx_all:
        out["code_agreement"] = float(torch.cat(agree).mean())
        out["within_radius"] = float(torch.cat(within).mean())
        out.update(codebook_usage(torch.cat(idx_all), model.cfg.codebook_size))
    model.train(was_training)
    return out, (degraded, restored_np)


@torch.no_grad()
def theory_numbers(
    model: SOVQAE,
    crops: np.ndarray,
    device: torch.device,
    lipschitz_crops: int = 4,
    lipschitz_samples: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """The paper's robustness numbers on clean (training) crops, in fp32.

    delta_min: min distance between codes; eps_max / eps_mean: max / mean distance of a clean
    latent to its nearest code; lipschitz: empirical L of the encoder (image L2 norm in [-1, 1]
    units -> latent L2 norm); nroub = (delta_min / 2 - eps_max) / L, an image-space L2 radius
    (negative: no guarantee); nroub_rms: the same as a per-pixel RMS, and nroub_psnr_db: the
    PSNR of a perturbation of that RMS (degradations above this PSNR are provably repaired).
    """
    was_training = model.training
    model.eval()
    zs, idx = [], []
    dists = []
    for s in range(0, len(crops), 32):
        x = to_tensor(crops[s : s + 32], device)
        q = model.quantize(model.encode(x))
        zs.append(q.z)
        if q.indices is not None and q.distances is not None:
            idx.append(q.indices.flatten().cpu())
            dists.append(q.distances.flatten().cpu())
    gen = torch.Generator(device=device).manual_seed(seed)
    xl = to_tensor(crops[_evenly(len(crops), lipschitz_crops)], device)
    lip = estimate_lipschitz(model.encode, xl, n=lipschitz_samples, generator=gen)
    out: dict[str, float] = {"lipschitz": lip}
    if model.quantizer is not None:
        d = torch.cat(dists)
        dmin = float(q.delta_min)
        eps_max = float(d.max())
        nroub = (dmin / 2 - eps_max) / max(lip, 1e-12)
        rms = nroub / math.sqrt(crops[0].size) if nroub > 0 else float("nan")
        out.update(
            delta_min=dmin,
            eps_max=eps_max,
            eps_mean=float(d.mean()),
            eps_p99=float(d.quantile(0.99)),
            within_radius=float((d < dmin / 2).float().mean()),
            nroub=nroub,
            nroub_rms=rms,
            nroub_psnr_db=20 * math.log10(2.0 / rms) if nroub > 0 else float("nan"),
        )
        out.update(codebook_usage(torch.cat(idx), model.cfg.codebook_size))
    model.train(was_training)
    return out


def write_sample_grid(
    path: Path, degraded: np.ndarray, restored: np.ndarray, real: np.ndarray, rows: int
) -> None:
    """PNG with `rows` rows of degraded | restored | real (evenly spaced over the inputs)."""
    sel = _evenly(len(real), rows)
    grid = np.concatenate([np.concatenate([degraded[i], restored[i], real[i]], 1) for i in sel], 0)
    scale = max(1, 128 // real.shape[1])  # tiny crops are upscaled so the grid is viewable
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), np.ascontiguousarray(grid[..., ::-1]))


# ----------------------------------------------------------------------------- helpers


class _DeferredInterrupt:
    """First Ctrl-C: finish the current step, save state, then raise KeyboardInterrupt.
    Second Ctrl-C: raise at once. Only installable from the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but no CUDA GPU is available: use --device cpu")
    return dev


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":  # bf16 needs no loss scaling: preferred where the GPU has it
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise InputError("fp16 training needs CUDA; on CPU use amp='fp32' or 'bf16'")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _check_crops(name: str, crops: np.ndarray, resolution: int) -> None:
    if (
        not isinstance(crops, np.ndarray)
        or crops.dtype != np.uint8
        or crops.ndim != 4
        or crops.shape[1:] != (resolution, resolution, 3)
        or len(crops) == 0
    ):
        got = (
            f"{crops.dtype} {crops.shape}"
            if isinstance(crops, np.ndarray)
            else type(crops).__name__
        )
        raise InputError(
            f"{name} crops must be uint8 (N, {resolution}, {resolution}, 3) RGB with N >= 1 for "
            f"this model, got {got}"
        )


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.threpair-tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_state(path: Path, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path}: unreadable training state ({e}): delete it to start over"
        ) from e
    if not isinstance(state, dict) or state.get("state_version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not a threpair training state: delete it to start over")
    return state


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


# ----------------------------------------------------------------------------- the loop


def train(
    train_crops: np.ndarray,
    val_crops: np.ndarray,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_path: Path,
    metadata: dict,
    resume: bool = False,
    on_progress: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train on uint8 RGB crops (N, S, S, 3), S = model_cfg.resolution, in time order; write the
    EMA model to `out_path` (.safetensors) with `metadata` plus a "training" entry.

    resume=True continues from `<out>.state.pt` when it exists (same model config, trajectory
    settings and data required; steps/minutes may grow). on_progress (rank 0 only) receives dicts
    with "event": "start" | "log" | "val" | "end". Ctrl-C: the current step finishes, the state
    is saved, and KeyboardInterrupt is raised; resume later with resume=True.
    """
    out_path = Path(out_path)
    tc = train_cfg
    _check_crops("training", train_crops, model_cfg.resolution)
    _check_crops("validation", val_crops, model_cfg.resolution)
    gen_res = tc.gen_res or default_gen_res(model_cfg.resolution)
    f = model_cfg.downsample_factor
    if tc.patch_size and (tc.patch_size % f or tc.patch_size > model_cfg.resolution):
        raise InputError(
            f"patch size {tc.patch_size}: use a multiple of the network's downsampling factor "
            f"{f} up to the crop size {model_cfg.resolution} (0 = whole crops)"
        )

    # ---- distributed setup (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(tc.device, local_rank)
    own_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        own_group = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    master = rank == 0
    if master:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    autocast_dtype = _resolve_amp(tc.amp, device)
    use_scaler = autocast_dtype == torch.float16

    # ---- model, EMA copy, discriminator, optimizers
    torch.manual_seed(tc.seed)
    raw = SOVQAE(model_cfg).to(device)
    if device.type == "cuda" and tc.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(raw).eval().requires_grad_(False)
    disc_raw = PatchDiscriminator(
        3, tc.loss.disc_channels or model_cfg.base_channels, tc.loss.disc_layers
    ).to(device)
    model: torch.nn.Module = raw
    disc: torch.nn.Module = disc_raw
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = DDP(raw, device_ids=ids)
        disc = DDP(disc_raw, device_ids=ids)
    if tc.compile:
        # the training forward only; EMA, validation and checkpoints use the plain modules
        model = torch.compile(model)
    opt_g = torch.optim.Adam(raw.parameters(), lr=tc.lr, betas=tc.betas)
    opt_d = torch.optim.Adam(disc_raw.parameters(), lr=tc.lr, betas=tc.betas)
    scaler_g = torch.amp.GradScaler(device.type, enabled=use_scaler)
    scaler_d = torch.amp.GradScaler(device.type, enabled=use_scaler)
    perceptual, perceptual_note = load_perceptual(tc.loss.vgg_path, tc.loss.lpips_path)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    losses = active_losses(
        tc.loss,
        perceptual_note,
        perceptual is not None,
        tc.disc_start,
        model_cfg.use_vq,
        model_cfg.beta,
        model_cfg.reg_weight,
        model_cfg.delta,
        model_cfg.dead_code_after,
    )
    if model_cfg.output == "band":
        losses.append(f"band split on {model_cfg.band_grid} cells; auxiliary: the decoder's full "
                      f"image {tc.loss.rec.upper()} x{tc.aux_full_weight:g}")  # fmt: skip

    # ---- resume
    spath = state_path(out_path)
    fingerprint = _data_fingerprint(train_crops)
    traj = {k: tc.to_dict()[k] for k in _TRAJECTORY_FIELDS}
    step, elapsed, history, resumed_from = 0, 0.0, [], None
    if resume and spath.is_file():
        st = _load_state(spath, device)
        if (
            st["model_cfg"] != model_cfg.to_dict()
            or st["traj"] != _plain(traj)
            or st["data"] != fingerprint
        ):
            raise InputError(
                f"{spath} was written for another model config, training settings or data: "
                "use the same settings, or delete the state file to start over"
            )
        raw.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        disc_raw.load_state_dict(st["disc"])
        opt_g.load_state_dict(st["opt_g"])
        opt_d.load_state_dict(st["opt_d"])
        scaler_g.load_state_dict(st["scaler_g"])
        scaler_d.load_state_dict(st["scaler_d"])
        step, elapsed, history = st["step"], st["elapsed"], list(st["history"])
        resumed_from = step

    def state_dict() -> dict:
        return {
            "state_version": STATE_VERSION,
            "model_cfg": model_cfg.to_dict(),
            "traj": _plain(traj),
            "data": fingerprint,
            "step": step,
            "elapsed": elapsed,
            "history": history,
            "model": raw.state_dict(),
            "ema": ema.state_dict(),
            "disc": disc_raw.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "scaler_g": scaler_g.state_dict(),
            "scaler_d": scaler_d.state_dict(),
        }

    def emit(event: dict) -> None:
        if master and on_progress is not None:
            on_progress(event)

    val_sel = val_crops[_evenly(len(val_crops), tc.val_max_crops)]
    last_val: dict[str, float] = dict(history[-1]) if history else {}

    def validate() -> None:
        nonlocal last_val
        if not master:
            return
        metrics, (deg, res) = evaluate(
            ema, val_sel, gen_res, device, autocast_dtype, margin=tc.margin
        )
        last_val = {"step": float(step), "elapsed": float(elapsed), **metrics}
        history.append(last_val)
        if tc.sample_rows > 0:
            write_sample_grid(samples_path(out_path), deg, res, val_sel, tc.sample_rows)
        emit({"event": "val", **last_val})

    emit({
        "event": "start", "losses": losses, "parameters": num_parameters(raw),
        "device": str(device), "amp": str(autocast_dtype), "world_size": world,
        "resumed_from": resumed_from, "gen_res": gen_res, "output": model_cfg.output,
        "patch_size": tc.patch_size or model_cfg.resolution, "workers": tc.workers,
        "compile": tc.compile,
    })  # fmt: skip

    def plateaued() -> bool:
        """No validation in the last `patience` improved on the best before them."""
        p = tc.patience
        if p <= 0 or len(history) <= p:
            return False
        before = max(h["psnr_repair"] for h in history[:-p])
        return max(h["psnr_repair"] for h in history[-p:]) < before + tc.min_improvement

    raw.train()
    stopped_by = "steps"
    t_last, step_last = time.perf_counter(), step
    # wall time of this session, validation included, on top of the time before a resume
    t_start, elapsed_before = time.perf_counter(), elapsed
    interrupt = _DeferredInterrupt()
    in_step = False
    pin = device.type == "cuda"
    feed = batches(train_crops, tc, gen_res, step, rank, world, pin)
    try:
        with interrupt:
            while step < tc.steps:
                elapsed = elapsed_before + time.perf_counter() - t_start
                if _agree_stop(
                    tc.minutes is not None and elapsed >= tc.minutes * 60, world, device
                ):
                    stopped_by = "minutes"
                    break
                in_step = True
                inputs, targets = next(feed)
                logs = _train_step(
                    model, raw, ema, disc, disc_raw, opt_g, opt_d, scaler_g, scaler_d, perceptual,
                    inputs, targets, tc, step, device, autocast_dtype,
                )  # fmt: skip
                step += 1
                elapsed = elapsed_before + time.perf_counter() - t_start
                in_step = False
                if step % tc.log_every == 0 or step == tc.steps:
                    now = time.perf_counter()
                    sps = (step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    emit(
                        {
                            "event": "log",
                            "step": step,
                            "steps_per_s": sps,
                            "elapsed": elapsed,
                            **logs,
                        }
                    )
                if tc.val_every > 0 and step % tc.val_every == 0:
                    validate()
                    if master and plateaued():
                        stopped_by = "plateau"
                        emit({"event": "plateau", "step": step, "patience": tc.patience,
                              "best": max(h["psnr_repair"] for h in history)})  # fmt: skip
                if master and tc.state_every > 0 and step % tc.state_every == 0:
                    _save_state(spath, state_dict())
                if _agree_stop(stopped_by == "plateau", world, device):
                    stopped_by = "plateau"
                    break
                if _agree_stop(interrupt.requested, world, device):
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        # only a step boundary is a consistent state; mid-step the last periodic save stands
        if master and not in_step:
            _save_state(spath, state_dict())
        if own_group:
            dist.destroy_process_group()
        raise

    result_val = last_val
    theory: dict[str, float] = {}
    if master:
        if not history or history[-1].get("step") != float(step):
            validate()
        result_val = last_val
        theory = theory_numbers(
            ema, train_crops[_evenly(len(train_crops), tc.theory_max_crops)], device,
            tc.lipschitz_crops, tc.lipschitz_samples, tc.seed,
        )  # fmt: skip
        _save_state(spath, state_dict())
        training = {
            "steps": step, "seconds": elapsed, "stopped_by": stopped_by, "gen_res": gen_res,
            "train_crops": len(train_crops), "val_crops": len(val_crops), "world_size": world,
            "train_config": tc.to_dict(), "losses": losses, "val": result_val,
            "theory": theory, "history": history,
        }  # fmt: skip
        checkpoint.save(out_path, ema, model_cfg, {**metadata, "training": training})
        emit(
            {"event": "end", "step": step, "elapsed": elapsed, "val": result_val, "theory": theory}
        )
    if world > 1:
        dist.barrier()
    if own_group:
        dist.destroy_process_group()
    return TrainResult(
        checkpoint=out_path, steps=step, seconds=elapsed, stopped_by=stopped_by, val=result_val,
        history=history, theory=theory, losses=losses, resumed_from=resumed_from,
    )  # fmt: skip


def _plain(obj: Any) -> Any:
    """Tuples -> lists, dataclass dicts as plain dicts, so configs compare equal after a reload."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _agree_stop(flag: bool, world: int, device: torch.device) -> bool:
    """All ranks stop together (clocks and Ctrl-C differ per rank; a lone rank would hang)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _to_device(batch: Tensor, device: torch.device, tc: TrainConfig) -> Tensor:
    """uint8 (B, P, P, 3) -> float (B, 3, P, P) in [-1, 1] on `device` (channels_last on CUDA)."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if device.type == "cuda" and tc.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _train_step(
    model: torch.nn.Module,
    raw: SOVQAE,
    ema: SOVQAE,
    disc: torch.nn.Module,
    disc_raw: PatchDiscriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    scaler_g: torch.amp.GradScaler,
    scaler_d: torch.amp.GradScaler,
    perceptual: torch.nn.Module | None,
    inputs: Tensor,
    targets: Tensor,
    tc: TrainConfig,
    step: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> dict[str, float]:
    """One optimisation step on uint8 (B, P, P, 3) CPU tensors (pinned on CUDA)."""
    lc, mc = tc.loss, raw.cfg
    x_in, x = _to_device(inputs, device, tc), _to_device(targets, device, tc)
    lr = _lr_at(step, tc)
    for opt in (opt_g, opt_d):
        for g in opt.param_groups:
            g["lr"] = lr
    use_gan = gan_active(step, tc.disc_start, lc)
    autocast = torch.autocast(
        device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    )

    # ---- autoencoder
    aux_w = tc.aux_full_weight if mc.output == "band" else 0.0
    with autocast:
        x_rec, q, decoded = model(x_in, with_decoded=True)
        rec = reconstruction_loss(x_rec, x, lc.rec)
        nll = lc.rec_weight * rec
        aux = reconstruction_loss(decoded.float(), x, lc.rec) if aux_w > 0 else None
        if perceptual is not None and lc.perceptual_weight > 0:
            perc = perceptual(x_rec, x)
            nll = nll + lc.perceptual_weight * perc
        elif lc.fft_weight > 0:
            perc = fft_loss(x_rec, x)
            nll = nll + lc.fft_weight * perc
        else:
            perc = torch.zeros((), device=device)
        loss = nll + q.vq_loss + mc.reg_weight * q.reg_loss
        if aux is not None:
            loss = loss + aux_w * aux
        g_adv = torch.zeros((), device=device)
        if use_gan:
            # the raw discriminator: its grads here are discarded, so no DDP sync is needed
            logits_fake, feats_fake = disc_raw(x_rec)
            g_adv = hinge_g_loss(logits_fake)
            if perceptual is None and lc.fm_weight > 0:
                _, feats_real = disc_raw(x)
                nll_fm = feature_matching_loss(feats_fake, feats_real)
                loss = loss + lc.fm_weight * nll_fm
            weight = adaptive_weight(nll, g_adv, raw.last_layer) * lc.disc_weight
            loss = loss + weight * g_adv
    opt_g.zero_grad(set_to_none=True)
    scaler_g.scale(loss).backward()
    scaler_g.unscale_(opt_g)
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw.parameters(), tc.grad_clip)
    scaler_g.step(opt_g)
    scaler_g.update()

    # ---- discriminator
    d_loss = torch.zeros((), device=device)
    if use_gan:
        opt_d.zero_grad(set_to_none=True)
        with autocast:
            logits_real, _ = disc(x)
            logits_fake, _ = disc(x_rec.detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
        scaler_d.scale(d_loss).backward()
        scaler_d.step(opt_d)
        scaler_d.update()

    # ---- EMA, then dead-code restart (restarted rows are copied into the EMA model too)
    with torch.no_grad():
        decay = min(tc.ema_decay, (1 + step) / (10 + step))
        for ep, rp in zip(ema.parameters(), raw.parameters(), strict=True):
            ep.lerp_(rp, 1.0 - decay)
        for eb, rb in zip(ema.buffers(), raw.buffers(), strict=True):
            eb.copy_(rb)
        restarted = 0
        if raw.quantizer is not None and ema.quantizer is not None and q.indices is not None:
            gen = torch.Generator(device=device).manual_seed(tc.seed * 1_000_003 + step)
            dead = raw.quantizer.update_usage(q.indices, q.z, generator=gen)
            restarted = int(dead.numel())
            if restarted:
                ema.quantizer.codebook[dead] = raw.quantizer.codebook[dead]
            ema.quantizer.unused_steps.copy_(raw.quantizer.unused_steps)

    return {
        "loss": float(loss.detach()),
        "rec": float(rec.detach()),
        "aux": float(aux.detach()) if aux is not None else 0.0,
        "perc": float(perc.detach()),
        "vq": float(q.vq_loss.detach()),
        "reg": float(q.reg_loss.detach()),
        "delta_min": float(q.delta_min),
        "g_adv": float(g_adv.detach()),
        "d_loss": float(d_loss.detach()),
        "restarted": float(restarted),
        "lr": lr,
    }
