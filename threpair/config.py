"""Frozen configuration of the video pipeline: detection, tracking, crop, paste, encode.

Model and training configs live next to the code they configure (model.ModelConfig +
model.PRESETS, train.TrainConfig), nanoGPT-style. Everything here is plain data: dataclasses
that round-trip through dicts so checkpoints can record how their crops were framed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

DetectorName = Literal["retinaface", "s3fd"]
Region = Literal["face", "lower", "mouth"]


@dataclass(frozen=True)
class DetectConfig:
    """How faces are found.

    `max_side`: frames are downscaled so their longer side is at most this many pixels before
    detection (faces in talking-head video are large; 640 px keeps RetinaFace at ~10 ms/frame).
    `every`: detect on every k-th frame; the frames between are interpolated by tracking
    when the faces of the two detected frames around them are `steady` (the same faces, each
    box edge moved by at most that share of the box side; `detect.steady`), and detected too
    when not (a face came, went or moved fast), as are the frames after the last k-th one.
    Every 2nd frame at 0.04 detects 51-56% of the frames of anchor_de_20s
    and hill_8s (the detection pass 16 -> 9 ms a frame at 512x512), the tracked geometry
    within 0.3 px (mean) and 4.4 px (max, of a 534-px crop side) of detecting every frame,
    and the same restore quality on hill_8s's degraded last 25% (face / mouth PSNR gain
    +1.52 / +1.77 vs +1.52 / +1.76; without the check +1.47 / +1.69). The seam blend placed
    the generator's box by the track alone and missed it by those fractions of a pixel: the
    detail step it left on anchor_de_20s degraded by `threpair degrade` (40 frames, as in
    tests/test_seams.py) rose from 0.40 to 0.58 of the step before the blend. Now each
    frame's box edges are moved to the frame's own line (`seams.refine_box`): 0.30 every
    frame, 0.20 every 2nd. Hence every 2nd frame by default for restore; the identity's
    bank, `degrade` and `eval` detect every frame (`every_frame`).
    """

    backend: DetectorName = "retinaface"
    max_side: int = 640
    every: int = 2
    steady: float = 0.04
    score_threshold: float = 0.8
    weights: str | None = None  # s3fd only: path to the S3FD .pth file


@dataclass(frozen=True)
class TrackConfig:
    """How one identity's face is followed through the video.

    `max_gap`: detection gaps of at most this many frames are bridged by interpolation;
    longer gaps are left untouched (the frames pass through unchanged).
    `smooth_window`: frames on each side used by the non-causal geometry smoother.
    `min_iou`: overlap needed to link a detection to a track in the next detected frame.
    """

    max_gap: int = 12
    smooth_window: int = 4
    min_iou: float = 0.3


@dataclass(frozen=True)
class CropConfig:
    """How a face box becomes the model's square crop.

    The crop is a similarity transform: centred on the face box (shifted down by `shift_y`
    box heights so the chin is inside, like Wav2Lip's bottom padding), side = `margin` times
    the box's larger side, rotated upright by the eye line when `align_roll` is set.
    `size` is the square crop resolution in pixels (the model's resolution).
    """

    size: int = 256
    margin: float = 1.5
    shift_y: float = 0.05
    align_roll: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class PasteConfig:
    """How a processed crop goes back into the frame.

    `feather`: width of the soft mask edge as a fraction of the crop side (erode + blur).
    `region`: which part of the face is replaced: the whole face, the lower face, or the mouth.
    `color_match`: match the mean/std of the pasted crop to the original crop under the mask.
    `mode`: "residual" (default) adds (output - input crop), warped back, to the frame: the
    frame keeps its own detail above the crop resolution (a 256-px model on a 500-px face
    would otherwise blur the eyes it never touched) and an identity model is an exact no-op
    (measured: bit-identical to a plain re-encode). "replace" pastes the model output itself,
    as the paper does; its round trip costs 34-42 dB of face PSNR on the real clips.
    `mask`: "landmarks" draws the region per frame from the detector's five landmarks
    (geometry.landmark_mask; the fixed shape where a frame has none), "fixed" uses
    region_mask's shape in crop units for every face.
    `seam`: "auto" looks for the generator's hard box (seams.find_box) and blends across the
    edges it finds, "off" leaves the box border alone. `seam_method`: "gradient" (step
    correction fading inwards), "feather" (cross-fade over the line) or "both";
    `seam_band`: how far inside the box the step correction fades out, in face boxes.
    """

    feather: float = 0.08
    region: Region = "face"
    color_match: bool = False
    mode: Literal["replace", "residual"] = "residual"
    mask: Literal["landmarks", "fixed"] = "landmarks"
    seam: Literal["auto", "off"] = "off"  # the CLI turns it on for identity restores
    seam_method: Literal["gradient", "feather", "ramp", "both"] = "both"
    seam_band: float = 0.12


@dataclass(frozen=True)
class EncodeConfig:
    """Output video encoding (H.264 yuv420p by default).

    `threads`: encoder threads (ffmpeg `-threads`); None lets the encoder choose. libx264's
    own choice (frame threads) is fast but not reproducible: the same yuv420p frames encoded
    twice on a loaded machine differed in 3 of 14 runs (1 to 79 packets; x264 core 165,
    ffmpeg 9.0.2). threads=1 gave identical packets in every run (14 of 14): use it where
    two encodes must match bit for bit.
    """

    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    threads: int | None = None


@dataclass(frozen=True)
class ConfidenceConfig:
    """How per-frame confidence turns into paste strength.

    A frame's `outside` is the share of latent positions farther than delta_min / 2 from
    their code. Clean training crops already have some (`baseline`, read from the
    checkpoint). Paste strength is 1 up to baseline + `slack`, then falls linearly to
    `min_strength` at baseline + slack + `span`: a frame the model does not recognise is
    blended less instead of hallucinated. `enabled=False` always pastes at full strength.
    """

    enabled: bool = True
    slack: float = 0.15
    span: float = 0.35
    min_strength: float = 0.25

    def strength(self, outside: float, baseline: float) -> float:
        if not self.enabled:
            return 1.0
        excess = (outside - baseline - self.slack) / max(self.span, 1e-6)
        return float(min(1.0, max(self.min_strength, 1.0 - excess * (1 - self.min_strength))))


@dataclass(frozen=True)
class PipelineConfig:
    """Everything `restore` needs besides the model.

    `warp`: where crops are cut and pasted. "opencv" (numpy on the CPU), "torch" (grid_sample
    on the model's device; needs a model with `run_tensor`), or "auto": torch when the model
    runs on CUDA, so the face stays on the GPU from crop to paste, else opencv.
    """

    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)
    warp: Literal["auto", "opencv", "torch"] = "auto"


def every_frame(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with detection on every frame, whatever the restore's default: what the identity's
    bank is cut along (farthest-point sampling picks the odd crops, and an interpolated frame's
    crop is one: kim_source_7s's identity of every 2nd frame restored kim_wav2lip_8s with 14
    frames blended less instead of 4 and its mouth 7% less sharp), what `degrade` tracks (a
    lip-sync generator places its box in every frame) and what `eval` measures along."""
    return replace(cfg, detect=replace(cfg.detect, every=1))


def identity_restore(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` as `threpair restore` uses it with an identity: the generator's box seam found and
    blended (`seam="auto"`), so the paste mask also covers the whole box."""
    return replace(cfg, paste=replace(cfg.paste, seam="auto"))
