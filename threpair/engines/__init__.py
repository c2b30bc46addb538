"""Repair engines: crops in, crops out, per-frame confidence; and which one a restore uses.

Every engine satisfies the pipeline's `restore.FaceModel` protocol: `__call__(crops)` on uint8
RGB (B, S, S, 3) crops of consecutive frames, `resolution` (None = any size), `last_stats`
(per-frame `FrameStats`: `outside` is the share of the face the engine does not know well),
`outside_baseline` and `reset()`; engines with `run_tensor` also run the device path.

- references (engines/references.py): the identity's bank, no training.
- sovqae (engines/sovqae.py): the identity's trained network, when it has one.

"Never worse than the input": `choose` uses an engine only where its gain, validated on the
identity's held-out real crops degraded at this restore's generator resolution, is positive;
otherwise it says so and falls back (references, then passthrough) unless the user forced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from threpair.config import CropConfig
from threpair.engines.attention import AttentionConfig
from threpair.errors import InputError
from threpair.generators import GENERATORS, crop_box, simulate
from threpair.identity import Identity
from threpair.metrics import psnr

ENGINES = ("auto", "references", "sovqae", "passthrough")


def region_masks(size: int, crop: CropConfig) -> tuple[np.ndarray, np.ndarray]:
    """(face, mouth) bool masks of a crop: the generator's box, and its lower-middle part."""
    x0, y0, x1, y1 = (v * size for v in crop_box(replace(crop, size=size)))
    yy, xx = np.mgrid[:size, :size]
    face = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    bw, bh = x1 - x0, y1 - y0
    mouth = (
        (xx >= x0 + 0.25 * bw)
        & (xx < x0 + 0.75 * bw)
        & (yy >= y0 + 0.62 * bh)
        & (yy < y0 + 0.9 * bh)
    )
    return face, mouth


def validate(repair: Any, holdout: np.ndarray, crop: CropConfig, gen_res: int) -> dict[str, float]:
    """Face and mouth PSNR (dB) of held-out real crops degraded at `gen_res`, before and after
    `repair` (a callable on uint8 (B, S, S, 3) crops), and the gains."""
    if len(holdout) == 0:
        raise InputError("the identity has no held-out crops to validate on: rebuild it")
    size = holdout.shape[1]
    c = replace(crop, size=size)
    degraded = np.stack([simulate(h, gen_res, c) for h in holdout])
    reset = getattr(repair, "reset", None)
    if reset is not None:
        reset()
    repaired = np.concatenate([repair(degraded[i : i + 8]) for i in range(0, len(degraded), 8)])
    if reset is not None:
        reset()
    face, mouth = region_masks(size, c)

    def mean_psnr(imgs: np.ndarray, mask: np.ndarray) -> float:
        return float(np.mean([psnr(a, b, mask=mask) for a, b in zip(imgs, holdout)]))

    out = {
        "degraded": mean_psnr(degraded, face),
        "repaired": mean_psnr(repaired, face),
        "mouth_degraded": mean_psnr(degraded, mouth),
        "mouth_repaired": mean_psnr(repaired, mouth),
        "crops": len(holdout),
    }
    out["gain"] = out["repaired"] - out["degraded"]
    out["mouth_gain"] = out["mouth_repaired"] - out["mouth_degraded"]
    return out


class ResizedRepair:
    """Runs a fixed-resolution engine on crops of another size through the pipeline's
    residual paste: the change it makes at its size, resized, added to the crop."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def reset(self) -> None:
        reset = getattr(self.engine, "reset", None)
        if reset is not None:
            reset()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        s, r = crops.shape[1], self.engine.resolution
        small = np.stack([cv2.resize(c, (r, r), interpolation=cv2.INTER_AREA) for c in crops])
        delta = self.engine(small).astype(np.float32) - small.astype(np.float32)
        big = np.stack([cv2.resize(d, (s, s), interpolation=cv2.INTER_LINEAR) for d in delta])
        return np.clip(crops.astype(np.float32) + big, 0, 255).round().astype(np.uint8)


@dataclass
class EngineRequest:
    """What the user asked `restore` for; `build` turns it into an engine per video."""

    identity: Identity
    engine: str = "auto"
    generator: str = "auto"  # a generators.GENERATORS name, pixels, or auto (estimated)
    device: str = "cpu"
    precision: str = "auto"
    hysteresis: float = 0.0
    temporal_smooth: float | None = None  # None: the engine's own (smoothing.default_weight)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    keep_bonus: float = 0.1
    # one reference engine per generator resolution: validation and the restore share its
    # keys, fitted at the first crop size (prepare takes seconds)
    _engines: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"--engine {self.engine}: use one of {', '.join(ENGINES)}")
        if self.engine == "sovqae" and self.identity.network is None:
            raise InputError(
                "--engine sovqae: this identity has no trained network (train-identity "
                "--minutes N trains one)"
            )

    def references(self, gen_res: int) -> Any:
        from threpair.engines.references import ReferenceEngine

        ident = self.identity
        engine = self._engines.get(gen_res)
        if engine is None:
            engine = self._engines[gen_res] = ReferenceEngine(
                ident.bank, ident.crop, gen_res, self.attention, self.device, self.keep_bonus,
                holdout=ident.holdout, state=ident.reference_state,
            )  # fmt: skip
        engine.reset()
        engine.last_stats, engine.frame_stats = [], []
        return engine

    def sovqae(self) -> Any:
        from threpair.engines.sovqae import network_engine

        return network_engine(self.identity, self.device, self.hysteresis, self.precision)

    def gain(
        self, name: str, gen_res: int, size: int | None = None
    ) -> tuple[dict[str, float], bool]:
        """The validated gain of engine `name` at `gen_res`: (record, computed now). The
        reference engine validates at crop `size` (the restore's; default the identity's)
        and keeps its keys and confidence baseline for the restore."""
        from threpair.engines.references import resize_crops

        table = self.identity.gains.setdefault(name, {})
        if str(gen_res) in table:
            return table[str(gen_res)], False
        ident = self.identity
        if name == "references":
            engine = self.references(gen_res)
            holdout = resize_crops(ident.holdout, size) if size else ident.holdout
            table[str(gen_res)] = validate(engine, holdout, ident.crop, gen_res)
            engine.baseline_from(engine.frame_stats)
        else:
            table[str(gen_res)] = validate(
                ResizedRepair(self.sovqae()), ident.holdout, ident.crop, gen_res
            )
        return table[str(gen_res)], True

    def choose(
        self, gen_res: int, size: int | None = None
    ) -> tuple[str, list[str], dict[str, Any]]:
        """(engine name, notes for the user, validated gains consulted); `size`: the crop
        size the restore will use (see `gain`)."""
        notes: list[str] = []
        gains: dict[str, Any] = {}
        if self.engine == "passthrough":
            return "passthrough", notes, gains
        order = [self.engine] if self.engine != "auto" else self.identity.engines()[::-1]
        for name in order:
            record, _ = self.gain(name, gen_res, size)
            gains[name] = record
            if record["gain"] > 0:
                return name, notes, gains
            msg = (
                f"engine {name}: validated gain {record['gain']:+.2f} dB at a {gen_res}-px "
                "generator on the identity's held-out crops"
            )
            if self.engine != "auto":
                notes.append(msg + "; used because --engine asked for it")
                return name, notes, gains
            notes.append(msg + "; not used")
        notes.append("no engine beats the input at this generator resolution: passing through")
        return "passthrough", notes, gains

    def build(self, name: str, gen_res: int) -> Any:
        """The engine `name`, wrapped with temporal smoothing when asked."""
        from threpair.restore import Passthrough
        from threpair.smoothing import SmoothedCorrection, default_weight

        if name == "passthrough":
            return Passthrough()
        engine = self.references(gen_res) if name == "references" else self.sovqae()
        w = self.temporal_smooth if self.temporal_smooth is not None else default_weight(name)
        return SmoothedCorrection(engine, w) if w > 0 else engine


def validate_identity(
    identity: Identity, device: str = "cpu", gen_res: int = GENERATORS["wav2lip"]
) -> dict[str, dict[str, float]]:
    """What train-identity does before saving: each engine's gain on the identity's held-out
    crops degraded at `gen_res` (at the bank's resolution), recorded in the identity with
    what the reference engine measured there (`Identity.reference_state`), so a restore at
    that size and generator starts without measuring. Returns {engine: record}."""
    request = EngineRequest(identity, device=device)
    return {name: request.gain(name, gen_res)[0] for name in identity.engines()}
