"""Lip-sync generators by the resolution they render the face at, and how to tell it from a video.

A generator squashes the (padded) face box to `res` x `res` pixels, renders it there and scales
it back: everything above that resolution is missing from the generated face. The reference
engine degrades its keys the same way, and "never worse" validation degrades held-out real
crops the same way, so both need this number. `estimate_generator_res` reads it off the input
by comparing the high-frequency energy of the generated face with that of the identity's real
crops degraded at each candidate resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from threpair.config import CropConfig
from threpair.degrade import lipsync_like
from threpair.errors import InputError

# Face-box render resolution of common lip-sync generators (their published model input).
GENERATORS: dict[str, int] = {
    "wav2lip": 96,  # Wav2Lip and Wav2Lip+GFPGAN pipelines (the GAN only sharpens after)
    "videoretalking": 96,  # its lip-sync network works on Wav2Lip's 96-px crops
    "sadtalker": 256,
    "musetalk": 256,
    "latentsync": 256,  # LatentSync 1.0 / 1.5 (1.6 renders at 512)
}
AUTO_CANDIDATES = (64, 96, 128, 160, 192, 256, 384)


def crop_box(crop: CropConfig) -> tuple[float, float, float, float]:
    """The generator's face box as fractions (x0, y0, x1, y1) of a restore crop.

    The crop is `margin` face boxes wide, centred `shift_y` boxes below the box centre
    (track.detection_params); Wav2Lip pads the box downwards to hold the chin (x 1.08), as
    `threpair degrade` does (evaluate.generator_box)."""
    bs = 1.0 / crop.margin
    cy = 0.5 - crop.shift_y * bs
    top = cy - bs / 2
    return (0.5 - bs / 2, top, 0.5 + bs / 2, min(1.0, top + 1.08 * bs))


def low_grid(gen_res: int, margin: float) -> int:
    """Side of the grid whose content the repair engines never change: half the generator's own
    resolution over the crop (its face box rendered at gen_res, the crop `margin` boxes
    wide). The mouth's shape lives well below that; between it and the generator's
    resolution the generator's upscaling attenuated detail that the engines restore
    (held-out anchor crops at 448 px, 96-px generator, reference engine: face +4.1 dB with
    this cut, +1.4 dB with the cut at the full generator resolution). The reference engine
    and the band-split network (`bands`, `model.ModelConfig.band_grid`) share it."""
    return max(8, int(round(gen_res * margin / 2)))


def simulate(crop_img: np.ndarray, gen_res: int, crop: CropConfig) -> np.ndarray:
    """A real crop (S, S, 3) uint8 RGB as the generator at `gen_res` would return it: the face
    box rendered at gen_res x gen_res and pasted back; pixels outside the box unchanged."""
    return lipsync_like(crop_img, gen_res, box=crop_box(crop))


def resolve(name: str | int) -> int | None:
    """'wav2lip' -> 96, '128' -> 128, 'auto' -> None (estimate from the input)."""
    if isinstance(name, int):
        res = name
    elif name == "auto":
        return None
    elif name.lower() in GENERATORS:
        return GENERATORS[name.lower()]
    else:
        try:
            res = int(name)
        except ValueError:
            raise InputError(
                f"--generator {name}: use auto, a face resolution in pixels, or one of "
                f"{', '.join(GENERATORS)}"
            ) from None
    if not 16 <= res <= 1024:
        raise InputError(f"--generator {res}: a face resolution between 16 and 1024 pixels")
    return res


# The part of the generator's box (fractions x0, y0, x1, y1 of it) that the mouth estimate
# reads: lips, chin and cheeks, what a lip-sync generator renders itself.
MOUTH_PART = (0.2, 0.55, 0.8, 0.95)


BAND_SIGMAS = (1.0, 2.0, 4.0)
# OpenCV's Gaussian of a float image reaches round(8 sigma + 1) // 2 px: blurring a window
# this much larger than the parts read gives them the values of blurring the whole crop
_BLUR_REACH = int(4 * max(BAND_SIGMAS)) + 1


def high_band_energy(
    crops: np.ndarray,
    crop: CropConfig,
    parts: Sequence[tuple[float, float, float, float]] = ((0, 0, 1, 1),),
) -> np.ndarray:
    """Mean squared Laplacian response in octave bands over each of `parts` of the face box
    (fractions of it; default the whole box) of each crop, luma.

    Returns (len(parts), len(crops), 3): energy of detail finer than 2, 4 and 8 pixels. The
    ratios between crops of the same person at the same size say how much detail is
    present. Only the window the parts need is blurred (the same values as blurring the
    whole crop, up to float rounding: `estimate_generator_res` on 16 crops each of the
    degraded hill_8s / anchor_de_20s / obama_20s, 0.86 / 0.56 / 0.36 -> 0.30 / 0.24 / 0.16 s)."""
    out = np.zeros((len(parts), len(crops), len(BAND_SIGMAS)))
    for n, img in enumerate(crops):
        s = img.shape[0]
        bx0, by0, bx1, by1 = (v * s for v in crop_box(crop))
        bw, bh = bx1 - bx0, by1 - by0
        rects = [
            (
                *(min(s, max(0, int(round(by0 + f * bh)))) for f in (p[1], p[3])),
                *(min(s, max(0, int(round(bx0 + f * bw)))) for f in (p[0], p[2])),
            )
            for p in parts
        ]  # (y0, y1, x0, x1) in pixels
        wy0 = max(0, min(r[0] for r in rects) - _BLUR_REACH)
        wy1 = min(s, max(r[1] for r in rects) + _BLUR_REACH)
        wx0 = max(0, min(r[2] for r in rects) - _BLUR_REACH)
        wx1 = min(s, max(r[3] for r in rects) + _BLUR_REACH)
        y = cv2.cvtColor(img[wy0:wy1, wx0:wx1], cv2.COLOR_RGB2GRAY).astype(np.float32)
        for b, sigma in enumerate(BAND_SIGMAS):
            d = (y - cv2.GaussianBlur(y, (0, 0), sigma)) ** 2
            for k, (y0, y1, x0, x1) in enumerate(rects):
                out[k, n, b] = np.mean(d[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
    return out


def _band_scores(
    generated: np.ndarray, simulated: dict[int, np.ndarray], crop: CropConfig, parts: dict
) -> dict[str, dict[int, float]]:
    """Per part (name: fractions of the box) and candidate: the log-distance of the simulated
    crops' band energies in that part from the generated ones' (lower is closer)."""
    log_mean = lambda c: np.log(high_band_energy(c, crop, list(parts.values())).mean(1) + 1e-3)  # noqa: E731
    target = log_mean(generated)
    sims = {res: log_mean(sim) for res, sim in simulated.items()}
    return {
        name: {res: float(np.abs(sim[k] - target[k]).sum()) for res, sim in sims.items()}
        for k, name in enumerate(parts)
    }


def estimate_generator_res(
    generated: np.ndarray,
    real: np.ndarray,
    crop: CropConfig,
    candidates: tuple[int, ...] = AUTO_CANDIDATES,
) -> tuple[int, dict[str, dict[int, float]]]:
    """The candidate resolution whose simulated output has the detail of the `generated` crops.

    generated: crops of the input video; real: the identity's real crops (same size S). Each
    candidate degrades the real crops; its score is the log-distance of their band energies
    from the generated ones (lower is better), over the whole face box and over its mouth part
    (`MOUTH_PART`). The box's reading wins unless the mouth reads lower by more than one
    candidate step: a lip-sync generator renders the mouth itself, while a face restorer run
    after it (GFPGAN, CodeFormer) sharpens the eyes, brows and hair, which then read as a
    much sharper generator; but the mouth alone has little texture, so its reading is the
    noisier one: above about 160 px it reads too high, and on `threpair demo`'s face
    (degraded at 96 px) it read one step low, 64, where the box read 96 (face PSNR of the
    repair +3.02 dB with 64, +3.64 with 96; the rule before, the lower of the two, took 64).
    Measured (the identity's bank against 16 input crops): the real Wav2Lip + GFPGAN output
    kim_wav2lip_8s, box 192 and mouth 96 (with 96, `bench/kim_pair.py` restores a mouth 0.32
    as sharp as the real one's, with 192 0.22); anchor_de_20s's held-out 25% degraded by
    `threpair degrade` at 64 / 96 / 128 / 192 / 256 px: box 64 / 96 / 128 / 192 / 256, mouth
    64 / 96 / 128 / 256 / 384; obama_20s, hill_8s, kim_source_7s at 96: both 96. Returns
    (best, {"box": {candidate: score}, "mouth": {...}}). When the generated face is as sharp
    as the real one, the largest candidate wins: nothing to add.
    """
    if len(generated) == 0 or len(real) == 0:
        raise InputError("estimating the generator resolution needs crops of both videos")
    simulated = {res: np.stack([simulate(r, res, crop) for r in real]) for res in candidates}
    scores = _band_scores(generated, simulated, crop, {"box": (0, 0, 1, 1), "mouth": MOUTH_PART})
    box, mouth = (min(scores[k], key=scores[k].__getitem__) for k in ("box", "mouth"))
    steps_lower = candidates.index(box) - candidates.index(mouth)
    return (mouth if steps_lower > 1 else box), scores
