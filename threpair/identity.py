"""The identity: everything threpair knows about one person, in one .safetensors file.

    ident = build_identity([Path("alice.mp4")])          # reference bank: seconds, no training
    ident.save("checkpoints/alice.safetensors")
    ident = Identity.load("checkpoints/alice.safetensors")

It holds
- a reference bank: aligned real crops of the person (the restore framing, so bank crops and
  restore crops line up), chosen by farthest-point sampling on a small descriptor of head
  pose and mouth shape, at the face's native crop size (up to 512 px);
- held-out crops from the last part of each video (never in the bank), on which every
  engine's gain is validated at the generator resolution a restore uses ("never worse");
- optionally a trained SOVQAE network (weights under "net.", its config and training record);
- the validated gains per engine and generator resolution.

The file: tensors "bank.crops" uint8 (N, S, S, 3), "bank.frames" int64 (N,), "holdout.crops"
uint8 (M, S, S, 3), "net.*" the network's weights; header keys "format" = "threpair-identity",
"format_version", "threpair_version", "identity" (JSON) and "sha256" over all tensor bytes.
Loading is strict; no pickle anywhere.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from threpair import __version__
from threpair.checkpoint import FORMAT_TAG as NETWORK_TAG
from threpair.checkpoint import _digest, _jsonable, open_header, read_tensors, write_atomic
from threpair.config import CropConfig, PipelineConfig, every_frame
from threpair.errors import CheckpointError, InputError
from threpair.geometry import crop_matrix, warp_crop
from threpair.model import SOVQAE, ModelConfig
from threpair.restore import ProgressFn, analyze_faces, prefetch
from threpair.video import probe, read_frames

FORMAT_TAG = "threpair-identity"
FORMAT_VERSION = 2  # version 1 was the network-only "threpair-sovqae" checkpoint
DESCRIPTOR_SIZE = 48  # crops are reduced to this size for the pose / mouth descriptor
MAX_BANK_RES = 512
MIN_BANK_RES = 128


def native_crop_size(sides: np.ndarray, cap: int = MAX_BANK_RES) -> int:
    """The crop size that keeps the face at its own pixels: the median crop side in the frame,
    rounded to a multiple of 32 (the reference engine's grid), within [128, cap]."""
    sides = sides[np.isfinite(sides)]
    if len(sides) == 0:
        raise InputError("no face geometry to size the crops from")
    return int(np.clip(round(float(np.median(sides)) / 32) * 32, MIN_BANK_RES, cap))


def descriptor(crop_small: np.ndarray) -> np.ndarray:
    """Pose and mouth descriptor of a small aligned crop (D, D, 3) uint8: the normalised luma
    of the whole crop at 12 x 12 (head pose, expression) and of the mouth area at 12 x 8,
    weighted twice (mouth shape: what lip sync changes)."""
    import cv2

    y = cv2.cvtColor(crop_small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    d = y.shape[0]
    whole = cv2.resize(y, (12, 12), interpolation=cv2.INTER_AREA).ravel()
    mouth = y[int(0.58 * d) : int(0.86 * d), int(0.3 * d) : int(0.7 * d)]
    mouth = cv2.resize(mouth, (12, 8), interpolation=cv2.INTER_AREA).ravel()
    v = np.concatenate([(whole - whole.mean()) / (whole.std() + 1e-3),
                        2 * (mouth - mouth.mean()) / (mouth.std() + 1e-3)])  # fmt: skip
    return v / np.sqrt(len(v))


def farthest_points(desc: np.ndarray, k: int) -> np.ndarray:
    """Indices of k rows of `desc` chosen by farthest-point sampling (the first is the row
    nearest the mean): every pose / mouth shape seen gets a near reference, not just the
    most frequent ones. Sorted ascending."""
    n = len(desc)
    if k >= n:
        return np.arange(n)
    first = int(np.argmin(((desc - desc.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((desc - desc[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((desc - desc[nxt]) ** 2).sum(1))
    return np.sort(np.asarray(chosen))


@dataclass
class Identity:
    """What `train-identity` builds. Crops are uint8 RGB at `resolution`."""

    crop: CropConfig  # framing of the crops (size = resolution)
    bank: np.ndarray  # (N, S, S, 3)
    bank_frames: np.ndarray  # (N,) index of each crop's frame in its source, per source order
    holdout: np.ndarray  # (M, S, S, 3) held-out real crops (validation only)
    info: dict[str, Any] = field(default_factory=dict)  # sources, poses, gains, ...
    network: SOVQAE | None = None
    network_config: ModelConfig | None = None
    network_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.bank.shape[1])

    @property
    def gains(self) -> dict[str, dict[str, dict[str, float]]]:
        """{engine: {str(gen_res): {"degraded", "repaired", "gain", ...}}} in dB."""
        return self.info.setdefault("gains", {})

    @property
    def reference_state(self) -> dict[str, dict[str, Any]]:
        """What the reference engine measured on the held-out crops, per crop size and
        settings (`ReferenceEngine.state_key`): tau, the blend's calibration, the confidence
        baseline. Filled when train-identity validates; a restore at the same size reads
        it instead of measuring again."""
        return self.info.setdefault("reference_state", {})

    def engines(self) -> list[str]:
        return ["references"] + (["sovqae"] if self.network is not None else [])

    # ---- file

    def save(self, path: str | os.PathLike) -> Path:
        """Write the identity atomically (temp file, then rename). Returns the path."""
        path = Path(path)
        tensors = {
            "bank.crops": torch.from_numpy(np.ascontiguousarray(self.bank)),
            "bank.frames": torch.from_numpy(np.asarray(self.bank_frames, np.int64)),
            "holdout.crops": torch.from_numpy(np.ascontiguousarray(self.holdout)),
        }
        if self.network is not None:
            for k, v in self.network.state_dict().items():
                tensors[f"net.{k}"] = v.detach().to("cpu").contiguous()
        body = {
            "crop": self.crop.to_dict(),
            "info": self.info,
            "network": None
            if self.network_config is None
            else {"config": self.network_config.to_dict(), "meta": self.network_meta},
        }
        header = {
            "format": FORMAT_TAG,
            "format_version": str(FORMAT_VERSION),
            "threpair_version": __version__,
            "identity": json.dumps(_jsonable(body), allow_nan=False),
            "sha256": _digest(tensors),
        }
        return write_atomic(path, tensors, header)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Identity:
        """Read an identity file (strict: see `read_header`); the network, if any, on `device`."""
        path = Path(path)
        header = read_header(path)
        body = json.loads(header["identity"])
        tensors = read_tensors(path, "its tensors")
        if header.get("sha256") != _digest(tensors):
            raise CheckpointError(
                f"{path}: tensors fail their checksum (corrupt file): copy it again"
            )
        for key in ("bank.crops", "bank.frames", "holdout.crops"):
            if key not in tensors:
                raise CheckpointError(f"{path}: no '{key}' in the identity file: rebuild it")
        bank = tensors["bank.crops"].numpy()
        crop = CropConfig.from_dict(body["crop"])
        if bank.ndim != 4 or bank.shape[1:] != (crop.size, crop.size, 3) or len(bank) == 0:
            raise CheckpointError(
                f"{path}: its bank holds {tuple(bank.shape)} crops, its framing says "
                f"{crop.size} px: rebuild it with `threpair train-identity`"
            )
        network = net_cfg = None
        net_meta: dict[str, Any] = {}
        if body.get("network"):
            net_cfg = ModelConfig.from_dict(body["network"]["config"])
            net_meta = body["network"].get("meta", {})
            network = SOVQAE(net_cfg)
            weights = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
            try:
                network.load_state_dict(weights, strict=True)
            except RuntimeError as e:
                raise CheckpointError(
                    f"{path}: network weights do not match its config ({str(e)[:120]}): rebuild"
                ) from None
            network = network.to(device).eval()
        return cls(
            crop=crop,
            bank=bank,
            bank_frames=tensors["bank.frames"].numpy(),
            holdout=tensors["holdout.crops"].numpy(),
            info=body.get("info", {}),
            network=network,
            network_config=net_cfg,
            network_meta=net_meta,
        )


def read_header(path: Path) -> dict[str, str]:
    """The safetensors header of an identity file, checked; typed errors that say what to do."""
    header = open_header(path)
    tag = header.get("format")
    if tag == NETWORK_TAG:
        raise CheckpointError(
            f"{path}: a network-only checkpoint of threpair "
            f"{header.get('threpair_version', '0.1')} (no reference bank, no validated gains): "
            "rebuild the identity with `threpair train-identity VIDEO` (seconds on a CPU)"
        )
    if tag != FORMAT_TAG:
        raise CheckpointError(
            f"{path}: a safetensors file but not a threpair identity: pass a file written by "
            "`threpair train-identity`"
        )
    if header.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: identity format version {header.get('format_version')}, this threpair "
            f"({__version__}) reads {FORMAT_VERSION}: rebuild it with `threpair train-identity`"
        )
    if "identity" not in header:
        raise CheckpointError(f"{path}: identity header missing: rebuild it")
    return header


def _frames_at(info_path: Path, frames: np.ndarray, geometry: np.ndarray, size: int) -> np.ndarray:
    """Crops of the given frame indices (ascending) at `size`, in one decoding pass."""
    info = probe(info_path)
    out = np.empty((len(frames), size, size, 3), np.uint8)
    want = {int(f): j for j, f in enumerate(frames)}
    last = int(frames.max()) if len(frames) else -1
    for i, frame in enumerate(prefetch(read_frames(info), 4)):
        if i in want:
            out[want[i]] = warp_crop(frame, crop_matrix(geometry[i], size), size)
        if i >= last:
            break
    return out


@dataclass
class _Scan:
    path: Path
    sha256: str
    n_frames: int
    face_frames: np.ndarray  # frames with the face
    geometry: np.ndarray
    desc: np.ndarray  # (len(face_frames), D)


def _scan(video: Path, cfg: PipelineConfig, progress: ProgressFn | None) -> _Scan:
    """Detect and track the face; a small aligned crop of every face frame -> descriptors."""
    from threpair.data import file_hash

    info = probe(video)
    analysis = analyze_faces(info, every_frame(cfg), progress=progress)
    face = np.flatnonzero(analysis.has_face)
    if len(face) == 0:
        raise InputError(
            f"{video}: no face found; build the identity from footage that shows the person"
        )
    descs = np.zeros((len(face), 12 * 12 + 12 * 8), np.float32)
    pos = {int(f): j for j, f in enumerate(face)}
    for i, frame in enumerate(prefetch(read_frames(info), 4)):
        j = pos.get(i)
        if j is not None:
            g = analysis.geometry[i]
            descs[j] = descriptor(
                warp_crop(frame, crop_matrix(g, DESCRIPTOR_SIZE), DESCRIPTOR_SIZE)
            )
        if progress is not None:
            progress("scan", i + 1, analysis.n_frames)
    return _Scan(video, file_hash(video), analysis.n_frames, face, analysis.geometry, descs)


def build_identity(
    videos: Sequence[Path],
    cfg: PipelineConfig | None = None,
    bank_size: int = 64,
    holdout_fraction: float = 0.1,
    holdout_max: int = 16,
    resolution: int | None = None,
    progress: ProgressFn | None = None,
) -> Identity:
    """The reference bank and held-out crops of one person's footage (no training).

    The last `holdout_fraction` of each video is held out (never in the bank); the bank is
    chosen by farthest-point sampling over the rest; `resolution` None = the face's native
    crop size (`native_crop_size`). `cfg.crop.size` is ignored.
    """
    cfg = cfg or PipelineConfig()
    if bank_size < 1:
        raise InputError(f"bank size {bank_size}: use at least 1")
    scans = [_scan(Path(v), cfg, progress) for v in videos]
    sides = np.concatenate([s.geometry[s.face_frames, 2] for s in scans])
    size = resolution or native_crop_size(sides)
    crop = CropConfig(**{**cfg.crop.to_dict(), "size": size})
    pools, holds = [], []
    for si, s in enumerate(scans):
        cut = int(round(s.n_frames * (1 - holdout_fraction)))
        pools += [(si, int(f), d) for f, d in zip(s.face_frames, s.desc) if f < cut]
        holds += [(si, int(f)) for f in s.face_frames if f >= cut]
    n_face = sum(len(s.face_frames) for s in scans)
    if not pools or not holds:
        raise InputError(
            f"too little footage: the face is in {n_face} frame(s); an identity needs frames "
            f"for its bank and its held-out last {holdout_fraction:.0%} (a few seconds at least)"
        )
    chosen = farthest_points(np.stack([d for _, _, d in pools]), bank_size)
    picks = [pools[i][:2] for i in chosen]
    hold_idx = np.unique(
        np.linspace(0, len(holds) - 1, min(holdout_max, len(holds))).round().astype(int)
    )
    hold_picks = [holds[i] for i in hold_idx] if holds else []
    bank_parts, hold_parts, frames = [], [], []
    for si, s in enumerate(scans):
        fb = np.array(sorted(f for v, f in picks if v == si), np.int64)
        fh = np.array(sorted(f for v, f in hold_picks if v == si), np.int64)
        both = np.union1d(fb, fh)
        if len(both):
            crops = _frames_at(s.path, both, s.geometry, size)
            lookup = {int(f): j for j, f in enumerate(both)}
            bank_parts.append(crops[[lookup[int(f)] for f in fb]])
            hold_parts.append(crops[[lookup[int(f)] for f in fh]])
            frames.append(fb)
        if progress is not None:
            progress("bank", si + 1, len(scans))
    bank = np.concatenate(bank_parts)
    holdout = np.concatenate(hold_parts) if hold_parts else np.zeros((0, size, size, 3), np.uint8)
    all_desc = np.concatenate([s.desc for s in scans])
    bank_desc = np.stack([pools[i][2] for i in chosen])
    info = {
        "sources": [
            {
                "path": str(s.path),
                "sha256": s.sha256,
                "frames": s.n_frames,
                "face_frames": int(len(s.face_frames)),
            }
            for s in scans
        ],  # fmt: skip
        "bank": {
            "size": int(len(bank)),
            "resolution": size,
            "native_side_px": float(np.median(sides)),
            "coverage": coverage(all_desc, bank_desc),
            "roll_deg": _range_deg(np.concatenate([s.geometry[s.face_frames, 3] for s in scans])),
        },
        "holdout": {"size": int(len(holdout)), "fraction": holdout_fraction},
        "detect": {"backend": cfg.detect.backend, "max_side": cfg.detect.max_side},
        "gains": {},
    }
    return Identity(crop, bank, np.concatenate(frames), holdout, info)


def coverage(all_desc: np.ndarray, bank_desc: np.ndarray) -> dict[str, float]:
    """How well the bank covers the footage: distance from each frame's descriptor to its
    nearest bank descriptor (median and 95th percentile), against the typical distance
    between two frames (median). Small ratios = every pose / mouth shape has a near reference."""
    d = np.sqrt(((all_desc[:, None] - bank_desc[None]) ** 2).sum(-1)).min(1)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(all_desc), (2, min(2000, len(all_desc) ** 2)))
    typical = float(np.median(np.sqrt(((all_desc[a] - all_desc[b]) ** 2).sum(-1)))) or 1.0
    return {
        "nearest_median": float(np.median(d) / typical),
        "nearest_p95": float(np.percentile(d, 95) / typical),
    }


def _range_deg(angles: np.ndarray) -> list[float]:
    a = np.degrees(angles[np.isfinite(angles)])
    return [round(float(a.min()), 1), round(float(a.max()), 1)] if len(a) else []


def summary(ident: Identity) -> dict[str, Any]:
    """What `inspect` shows: bank, held-out crops, network, validated gains."""
    bank = ident.info.get("bank", {})
    net = None
    if ident.network_config is not None:
        n = sum(p.numel() for p in ident.network.parameters()) if ident.network else 0
        net = {
            "preset": ident.network_meta.get("preset"),
            "resolution": ident.network_config.resolution,
            "output": ident.network_config.output,
            "band_grid": ident.network_config.band_grid,
            "parameters": n,
            "training": {
                k: ident.network_meta.get("training", {}).get(k)
                for k in ("steps", "seconds", "stopped_by", "val", "theory")
            },
        }
    return {
        "bank": {**bank, "shape": list(ident.bank.shape)},
        "holdout": {**ident.info.get("holdout", {}), "shape": list(ident.holdout.shape)},
        "crop": ident.crop.to_dict(),
        "sources": ident.info.get("sources", []),
        "network": net,
        "gains": ident.gains,
        "reference_state": ident.reference_state,
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


GainFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def attach_network(ident: Identity, network_file: Path) -> None:
    """Embed a trained network checkpoint (checkpoint.save's file) into the identity."""
    from threpair import checkpoint

    model, cfg, meta = checkpoint.load(network_file)
    ident.network, ident.network_config, ident.network_meta = model, cfg, meta
    ident.gains.pop("sovqae", None)  # a new network: validate again


def network_work_path(target: Path) -> Path:
    """Where train-identity trains the network before embedding it (resume state next to it)."""
    return target.with_name(f".{target.stem}.network.safetensors")
