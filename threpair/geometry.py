"""Crop affine, inverse paste, feathered masks, colour match: pure functions on numpy arrays.

Conventions: frames and crops are RGB uint8 (H, W, 3); a crop geometry is (cx, cy, side,
angle) in frame pixels / radians (see track.detection_params); a crop matrix is the 2x3
affine that maps frame pixel coordinates to crop pixel coordinates (OpenCV convention).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from threpair.config import CropConfig, PasteConfig, Region

# The repaired crop goes back into the frame by bicubic interpolation (the mask by bilinear):
# a bilinear warp at a fractional offset averages neighbouring pixels, the very detail the
# engines add. Held-out 25% of each clip degraded at 96 px, restored by the reference engine
# (identity of the first 75%), face / mouth PSNR, bicubic vs bilinear: anchor_de_20s
# +0.20 / +0.17, obama_20s +0.19 / +0.07, hill_8s +0.03 / +0.05; with the real frames as the
# "repair" (the ceiling of the paste) anchor_de_20s 40.61 -> 41.60 dB face.
PASTE_INTERPOLATION = cv2.INTER_CUBIC


def crop_matrix(params: np.ndarray, size: int) -> np.ndarray:
    """2x3 float64 affine taking frame pixels to a `size` x `size` crop.

    The face centre goes to the crop centre, `side` frame pixels become `size` crop pixels,
    and the image is rotated by -angle so the eye line is horizontal.
    """
    cx, cy, side, angle = (float(v) for v in params)
    s = size / side
    c, si = np.cos(angle) * s, np.sin(angle) * s
    half = (size - 1) / 2
    return np.array([[c, si, half - c * cx - si * cy], [-si, c, half + si * cx - c * cy]])


def warp_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the square crop out of `frame` (edges replicated where it leaves the frame)."""
    return cv2.warpAffine(
        frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@functools.lru_cache(maxsize=16)
def region_mask(size: int, region: Region, crop: CropConfig, feather: float) -> np.ndarray:
    """Soft float32 (size, size) mask in crop space, 1 inside the region, 0 at the crop edge.

    The face box occupies `size / crop.margin` pixels around the (shifted) centre of the crop,
    so the regions are drawn in units of that box: the whole face (an ellipse slightly larger
    than the box), the lower face (that ellipse below the nose line: where lip-sync
    generators change pixels) or the mouth. The hard shape is eroded and then blurred by
    `feather * size` pixels, so the soft edge ends where the hard shape did.
    """
    bs = size / crop.margin
    cx = (size - 1) / 2
    cy = cx - crop.shift_y * bs  # the box centre sits above the crop centre
    hard = np.zeros((size, size), np.uint8)
    scale = 16  # sub-pixel precision for cv2.ellipse
    if region == "mouth":
        centre, axes = (cx, cy + 0.24 * bs), (0.32 * bs, 0.2 * bs)
    else:
        centre, axes = (cx, cy), (0.48 * bs, 0.56 * bs)
    cv2.ellipse(
        hard,
        (int(centre[0] * scale), int(centre[1] * scale)),
        (int(axes[0] * scale), int(axes[1] * scale)),
        0,
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        shift=4,
    )
    if region == "lower":
        hard[: int(cy - 0.02 * bs)] = 0
    k = max(1, int(round(feather * size)))
    eroded = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    soft = cv2.GaussianBlur(eroded.astype(np.float32) / 255.0, (0, 0), sigmaX=max(k / 2, 0.5))
    soft = _zero_border(soft)
    soft.setflags(write=False)
    return soft


def landmark_mask(
    size: int,
    region: Region,
    points: np.ndarray,
    feather: float,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Soft float32 (size, size) mask in crop space drawn from this face's five landmarks.

    `points`: (5, 2) landmarks in crop pixels, RetinaFace order (right eye, left eye, nose,
    right and left mouth corner). The shapes follow the face instead of the crop: an ellipse
    whose axes follow the eye-to-mouth direction, sized by the eye distance and the
    eye-to-mouth distance (calibrated so that on frontal faces it matches region_mask's
    fixed ellipse), cut below the nose for "lower", around the mouth corners for "mouth".
    `box`: optional (4, 2) corners of the generator's box in crop pixels; for "face" and
    "lower" the mask then also covers the whole box (half strength on its border, full
    `feather * size` inside it), so the whole generated region is repaired: the repair
    engines add back the detail the generator lost, up to its box's edge, which also softens
    the seam (seams.blend_seam blends across it after the paste). Degraded anchor_de_20s,
    50 frames, reference engine: face PSNR 36.46 dB with the box eroded by two feathers
    (fading out well inside it, the previous shape), 36.72 dB with this one.
    Soft edges as in region_mask: eroded by `feather * size`, then blurred. Above 255 px the
    mask is drawn on a grid of about 128 px and scaled up (bilinear): it is blurred over
    `feather * size` px anyway, and erosion and blur at full size took 15-20 ms a frame.
    """
    step = size // 128
    if step > 1:
        small = size // step
        r = small / size  # pixel centres at whole numbers on both grids
        pts_s = (np.asarray(points, np.float64) + 0.5) * r - 0.5
        box_s = None if box is None else (np.asarray(box, np.float64) + 0.5) * r - 0.5
        soft = cv2.resize(
            _draw_landmark_mask(small, region, pts_s, feather, box_s), (size, size),
            interpolation=cv2.INTER_LINEAR,
        )  # fmt: skip
        return _zero_border(soft)
    return _draw_landmark_mask(size, region, points, feather, box)


def _zero_border(mask: np.ndarray) -> np.ndarray:
    """`mask` with its outermost pixel rows and columns set to 0 (in place)."""
    mask[:1], mask[-1:], mask[:, :1], mask[:, -1:] = 0, 0, 0, 0
    return mask


def _draw_landmark_mask(
    size: int, region: Region, points: np.ndarray, feather: float, box: np.ndarray | None
) -> np.ndarray:
    """`landmark_mask` drawn at `size` itself: the ellipse (and box), eroded, blurred, its
    border 0."""
    p = np.asarray(points, np.float64).reshape(5, 2)
    eye, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    iod = float(np.linalg.norm(p[1] - p[0]))
    em_vec = mouth - eye
    em = max(float(np.linalg.norm(em_vec)), 1e-3)
    down = em_vec / em
    angle = float(np.degrees(np.arctan2(-down[0], down[1])))
    if region == "mouth":
        centre = mouth + 0.05 * em * down
        axes = (0.5 * float(np.linalg.norm(p[4] - p[3])) + 0.55 * iod, 0.57 * em)
    else:
        centre = eye + 0.29 * em_vec
        axes = (max(1.45 * iod, 1.1 * em), 1.6 * em)
    scale = 16
    hard = np.zeros((size, size), np.uint8)
    cv2.ellipse(
        hard,
        (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
        (max(1, int(axes[0] * scale)), max(1, int(axes[1] * scale))),
        angle, 0, 360, 255, -1, cv2.LINE_AA, shift=4,
    )  # fmt: skip
    k = max(1, int(round(feather * size)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    below = None
    if region == "lower":  # the half-plane below the nose, across the face's own axis
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        side = (xx - p[2, 0]) * down[0] + (yy - p[2, 1]) * down[1]
        below = side > -0.3 * em
        hard[~below] = 0
    eroded = cv2.erode(hard, kernel)
    if box is not None and region != "mouth":
        hb = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(hb, np.round(np.asarray(box) * scale).astype(np.int32), 255,
                           cv2.LINE_AA, shift=4)  # fmt: skip
        if below is not None:
            hb[~below] = 0
        eroded = np.maximum(eroded, hb)
    soft = cv2.GaussianBlur(eroded.astype(np.float32) / 255.0, (0, 0), sigmaX=max(k / 2, 0.5))
    return _zero_border(soft)


def match_color(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift/scale each channel of `out` so its mean/std under `mask` match `ref`'s.

    Both uint8 (S, S, 3); returns uint8. Used to keep the pasted face in the frame's colours.
    """
    w = mask.astype(np.float64)[..., None]
    total = max(w.sum(), 1e-6)
    o, r = out.astype(np.float64), ref.astype(np.float64)
    mo, mr = (o * w).sum((0, 1)) / total, (r * w).sum((0, 1)) / total
    so = np.sqrt(((o - mo) ** 2 * w).sum((0, 1)) / total) + 1e-6
    sr = np.sqrt(((r - mr) ** 2 * w).sum((0, 1)) / total) + 1e-6
    return np.clip((o - mo) * (sr / so) + mr, 0, 255).round().astype(np.uint8)


def paste_roi(matrix: np.ndarray, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Frame rectangle (x0, y0, x1, y1) covered by the crop square, clipped to the frame."""
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]])
    pts = corners @ inv.T
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 1, 0, width))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 1, 0, height))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 2, 0, width))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 2, 0, height))
    return x0, y0, x1, y1


def frame_mask(matrix: np.ndarray, mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """The crop-space `mask` warped into a full (height, width) float32 frame mask."""
    inv = cv2.invertAffineTransform(matrix)
    return cv2.warpAffine(mask, inv, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)


def paste(
    frame: np.ndarray,
    out_crop: np.ndarray,
    in_crop: np.ndarray,
    matrix: np.ndarray,
    mask: np.ndarray,
    cfg: PasteConfig,
    strength: float = 1.0,
) -> np.ndarray:
    """Warp `out_crop` back into `frame` under the feathered `mask`; returns a new frame.

    `in_crop` is what was cut out of this frame (for colour matching and residual mode).
    `strength` in [0, 1] scales the mask (less blending for low-confidence frames). Pixels
    where the warped mask is 0 are returned bit-identical to `frame`.
    """
    size = out_crop.shape[0]
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = paste_roi(matrix, size, w, h)
    result = frame.copy()
    if x1 <= x0 or y1 <= y0 or strength <= 0:
        return result
    if cfg.color_match:
        out_crop = match_color(out_crop, in_crop, mask)
    inv = cv2.invertAffineTransform(matrix)
    inv[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    m = cv2.warpAffine(mask, inv, dsize, flags=cv2.INTER_LINEAR, borderValue=0)
    if strength != 1.0:
        m *= strength
    m = m[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    # in place where the arithmetic allows (the same figures as the plain expressions, bit
    # for bit: one multiply and one add per value either way), a third less time at 512 px
    if cfg.mode == "residual":
        delta = cv2.subtract(out_crop, in_crop, dtype=cv2.CV_32F)  # exact: whole numbers
        blended = cv2.warpAffine(delta, inv, dsize, flags=PASTE_INTERPOLATION, borderValue=0)
        blended *= m
        blended += roi
    else:
        warped = cv2.warpAffine(
            out_crop.astype(np.float32), inv, dsize, flags=PASTE_INTERPOLATION,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        blended = roi * (1 - m) + warped * m
    np.clip(blended, 0, 255, out=blended)
    np.rint(blended, out=blended)
    np.copyto(result[y0:y1, x0:x1], blended.astype(np.uint8), where=m > 0)
    return result
