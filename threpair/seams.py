"""Generator box seams: find the hard rectangle a lip-sync generator pasted, blend across it.

    seam = find_box(info, analysis, cfg)          # once per video (a short extra decode pass)
    boxes = seam.frame_boxes(analysis.geometry)   # (N, 4) x0, y0, x1, y1 per frame, NaN = none
    box = refine_box(generated_frame, boxes[i], seam.edges)  # each edge on this frame's line
    frame = blend_seam(frame, box, seam.edges, band)  # pixels outside the band untouched
    edge_strength(frame, boxes[i])                # the seam figure: step across each edge

Wav2Lip and its kin render a padded face box at low resolution and paste it back as a hard,
axis-aligned rectangle. Its edges are straight lines that move with the face: in face-
normalised coordinates (the face box centre at 0, one face box = 1 unit) they stay at the same
place in every frame, while real contours (jaw, hair, collar) curve and change with pose. So
the search runs in those coordinates: per sampled frame, the step across every row and column
of a window around the face (median over segments along the line, so only straight lines
score), averaged over frames; a box edge is a sharp peak of that profile against its
neighbourhood. Which of the four edges were found is kept (a generator that re-renders only
the lower half has no top edge at the forehead).

Removing the seam is a frame operation at the box border, after the engine's paste, so it
works whatever the engine did (also with `--model passthrough`):
- "gradient": the step across the edge (outside mean minus inside mean, per position along
  the edge, smoothed along it) is added to the inside and tapered to zero over `band` pixels:
  the brightness/colour jump becomes a gentle ramp inside the generated region, and the real
  pixels outside stay untouched (a one-sided membrane, the gradient-domain idea without a
  global solve).
- "ramp": outside the box, a sharpness ramp: the real pixels next to the edge are mixed with
  a copy blurred like the generator's render, fully at the edge and fading out over `band`,
  so the jump from the blurry inside to the sharp outside (the seam a 96-px render leaves
  even with perfect colours) becomes gradual, as a feathered paste would have made it.
- "feather": a narrow cross-fade with a blurred copy over the edge line (measured: it
  lowers the brightness step but makes the sharpness jump worse, see bench/seams.py).
- "both" (default): gradient, then ramp.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np

from threpair.config import CropConfig, PipelineConfig
from threpair.detect import detection_size
from threpair.geometry import crop_matrix, landmark_mask
from threpair.video import VideoInfo, read_frames

EDGES = ("left", "top", "right", "bottom")
SeamMethod = Literal["gradient", "feather", "ramp", "both"]

# Scan grid: face-normalised window u, v in [-SPAN, SPAN] face boxes, RES grid pixels per box.
SPAN = 1.0
RES = 96
# Where each edge is searched (face-box units from the face box centre) and the stretch of
# the perpendicular axis whose steps are scored. Sign: +1 where the inside comes first.
# Sides closer than 0.42 are not searched: there the face's own contour (skin against
# background, the same texture step) dominates; Wav2Lip's box on kim_wav2lip_8s has its sides
# at about +-0.3, on that contour, where its seam is hardly visible anyway.
SEARCH = {
    "left": (-0.95, -0.42, -1),
    "right": (0.42, 0.95, 1),
    "top": (-0.95, -0.3, -1),
    "bottom": (0.4, 0.95, 1),
}
ALONG = {"vertical": (-0.2, 0.4), "horizontal": (-0.4, 0.4)}
# Steps (grey levels, any channel) corrected in full / not at all (see _capped).
STEP_FULL, STEP_ZERO = 10.0, 25.0


@dataclass
class SeamBox:
    """The generator's box of one video, in face-normalised units (see module docstring).

    `box` (u0, v0, u1, v1): edges relative to the face box centre, in face boxes (edges not
    found keep the default, a square face box padded at the bottom as Wav2Lip pads it);
    `edges`: the edges that were found (only those are blended); `scores`: peak strength per
    edge in units of the profile's median absolute value (about 1-2 where there is no line).
    """

    found: bool
    box: tuple[float, float, float, float] = (-0.5, -0.5, 0.5, 0.58)
    edges: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    frames_scanned: int = 0
    seconds: float = 0.0
    threshold: float = 0.0

    def frame_boxes(self, geometry: np.ndarray, crop: CropConfig) -> np.ndarray:
        """(N, 4) float boxes x0, y0, x1, y1 in frame pixels (NaN rows where no geometry)."""
        g = np.asarray(geometry, np.float64)
        bs = g[:, 2] / crop.margin
        cx, cy = g[:, 0], g[:, 1] - crop.shift_y * bs
        u0, v0, u1, v1 = self.box
        return np.stack([cx + u0 * bs, cy + v0 * bs, cx + u1 * bs, cy + v1 * bs], axis=1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = [round(float(v), 4) for v in self.box]
        d["edges"] = list(self.edges)
        d["scores"] = {k: round(float(v), 3) for k, v in self.scores.items()}
        d["seconds"] = round(self.seconds, 3)
        return d


def face_frame(geometry: np.ndarray, crop: CropConfig, scale: float = 1.0) -> tuple:
    """(cx, cy, bs): the face box centre and size in pixels of a frame `scale` times the
    original size, from one row of crop geometry."""
    cx, cy, side, _ = (float(v) for v in geometry)
    bs = side / crop.margin
    return cx * scale, (cy - crop.shift_y * bs) * scale, bs * scale


def texture_window(frame: np.ndarray, cx: float, cy: float, bs: float) -> np.ndarray:
    """log of the local detail above a generator's resolution (|luma - blur|, blur sigma half
    a pixel of a 96-px render of the face box), on the face window u, v in [-SPAN, SPAN]
    ((2*SPAN*RES)^2 float32 grid, axis-aligned: generator boxes are axis-aligned in the frame).
    A generated region lacks that detail, so its border is a step of this map."""
    luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    detail = np.abs(luma - cv2.GaussianBlur(luma, (0, 0), max(0.6, 0.5 * bs / 96)))
    g = 2 * int(SPAN * RES)
    s = RES / bs
    m = np.array([[s, 0, SPAN * RES - s * cx], [0, s, SPAN * RES - s * cy]])
    flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    win = cv2.warpAffine(detail, m, (g, g), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return np.log(cv2.blur(win, (3, 3)) + 0.3)


def step_profile(win: np.ndarray, lo: float, hi: float, k: int = 3, segments: int = 6):
    """Signed step across every grid row of `win` (mean of the k rows after minus the k rows
    before; index i = the line between rows i-1 and i), the median over `segments` stretches
    of columns [lo, hi] (face-box units), so only lines straight across all of them score."""
    n = win.shape[0]
    c = np.cumsum(np.pad(win, ((1, 0), (0, 0))), axis=0)
    i = np.arange(k, n - k + 1)
    step = (c[i + k] - c[i]) / k - (c[i] - c[i - k]) / k
    c0, c1 = (int(round((v + SPAN) * RES)) for v in (lo, hi))
    parts = np.array_split(step[:, c0:c1], segments, axis=1)
    out = np.zeros(n)
    out[i] = np.median(np.stack([p.mean(1) for p in parts]), axis=0)
    return out


def find_box(
    info: VideoInfo,
    geometry: np.ndarray,
    cfg: PipelineConfig,
    max_frames: int = 60,
    every: int = 2,
    threshold: float = 2.5,
) -> SeamBox:
    """Look for the generator's hard box in up to `max_frames` frames with a face (every
    `every`-th frame, decoded with the longer side at most 960 px), following the face
    `geometry` (the analysis pass's (N, 4) crop geometry). An edge is found where the
    averaged step profile peaks above `threshold` times its median absolute value, with the
    sign of a generated inside (less detail); the box is found when two edges are."""
    t0 = time.perf_counter()
    dw, dh = detection_size(info.width, info.height, 960)
    scale = dw / info.width
    acc = {"horizontal": np.zeros(2 * int(SPAN * RES)), "vertical": np.zeros(2 * int(SPAN * RES))}
    n = 0
    frames = read_frames(info, (dw, dh))
    try:
        for i, small in enumerate(frames):
            if n >= max_frames or i >= len(geometry):
                break
            if i % every or np.isnan(geometry[i, 0]):
                continue
            cx, cy, bs = face_frame(geometry[i], cfg.crop, scale)
            if bs < 24:  # too small to see a seam
                continue
            win = texture_window(small, cx, cy, bs)
            acc["horizontal"] += step_profile(win, *ALONG["horizontal"])
            acc["vertical"] += step_profile(win.T, *ALONG["vertical"])
            n += 1
    finally:
        frames.close()
    if n == 0:
        return SeamBox(False, seconds=time.perf_counter() - t0, threshold=threshold)
    pos, scores = {}, {}
    for edge, (lo, hi, sign) in SEARCH.items():
        prof = acc["vertical" if edge in ("left", "right") else "horizontal"] / n
        mad = float(np.median(np.abs(prof[8:-8]))) + 1e-4
        i0, i1 = (int(round((v + SPAN) * RES)) for v in (lo, hi))
        j = int(np.argmax(sign * prof[i0:i1]))
        pos[edge] = (i0 + j) / RES - SPAN
        scores[edge] = float(sign * prof[i0 + j] / mad)
    found_edges = tuple(e for e in EDGES if scores[e] >= threshold)
    default = SeamBox.box
    box = tuple(pos[e] if e in found_edges else default[k] for k, e in enumerate(EDGES))
    found = len(found_edges) >= 2
    return SeamBox(
        found=found,
        box=box if found else default,  # type: ignore[arg-type]
        edges=found_edges if found else (),
        scores=scores,
        frames_scanned=n,
        seconds=time.perf_counter() - t0,
        threshold=threshold,
    )


# ----------------------------------------------------------------- measuring and blending


def _edge_strips(
    frame: np.ndarray, box: np.ndarray, edge: str, depth: int, offset: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """(outside, inside) strips of `depth` pixels on either side of one box edge (shifted by
    `offset` pixels outwards), over the middle 80% of the edge, as float32 (L, depth, C) with
    axis 1 running away from the edge. None when the edge is (partly) outside the frame."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if edge in ("top", "bottom"):
        a, b = x0 + (x1 - x0) // 10, x1 - (x1 - x0) // 10
        e = (y0 - offset) if edge == "top" else (y1 + offset)
        if a < 0 or b > w or e - depth < 0 or e + depth > h:
            return None
        above = frame[e - depth : e, a:b][::-1].transpose(1, 0, 2)
        below = frame[e : e + depth, a:b].transpose(1, 0, 2)
        out, ins = (above, below) if edge == "top" else (below, above)
    else:
        a, b = y0 + (y1 - y0) // 10, y1 - (y1 - y0) // 10
        e = (x0 - offset) if edge == "left" else (x1 + offset)
        if a < 0 or b > h or e - depth < 0 or e + depth > w:
            return None
        left = frame[a:b, e - depth : e][:, ::-1]
        right = frame[a:b, e : e + depth]
        out, ins = (left, right) if edge == "left" else (right, left)
    return out.astype(np.float32), ins.astype(np.float32)


def edge_strength(
    frame: np.ndarray,
    box: np.ndarray,
    edges: tuple[str, ...] = EDGES,
    depth: int = 4,
    group: int = 8,
    search: int = 3,
    figure: Literal["step", "detail"] = "step",
) -> dict[str, float]:
    """The seam figure of one frame along the box border, per edge and their "mean".

    "step": the brightness jump, in grey levels of BT.601 luma: mean over `group`-pixel
    stretches along the edge of |mean of `depth` pixels outside - mean of `depth` inside|.
    "detail": the sharpness jump, in octaves: the same with log2 of the local detail
    (|luma - Gaussian blur, sigma 1|) instead of luma; a generator's upscaled render has
    less detail than the real pixels beside it.
    Each takes the largest value within +-`search` pixels of the box edge (boxes are
    estimates). Real content crossing the edge scores too, so compare a value with the same
    figure on seam-free footage along the same box (the floor), not with zero.
    """
    lum = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if figure == "detail":
        detail = np.abs(lum - cv2.GaussianBlur(lum, (0, 0), 1.0))
        lum = np.log2(cv2.blur(detail, (3, 3)) + 0.25)
    lum = lum[..., None]
    res: dict[str, float] = {}
    for edge in edges:
        best = None
        for off in range(-search, search + 1):
            strips = _edge_strips(lum, box, edge, depth, off)
            if strips is None:
                continue
            out, ins = strips
            d = out.mean((1, 2)) - ins.mean((1, 2))
            m = len(d) // group * group
            if m == 0:
                continue
            s = float(np.abs(d[:m].reshape(-1, group).mean(1)).mean())
            best = s if best is None else max(best, s)
        if best is not None:
            res[edge] = best
    if res:
        res["mean"] = float(np.mean(list(res.values())))
    return res


def _smooth1d(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 of (L, C) values (edges replicated)."""
    if sigma <= 0 or len(x) < 2:
        return x
    return cv2.GaussianBlur(x[:, None, :], (1, 0), sigmaX=0, sigmaY=sigma,
                            borderType=cv2.BORDER_REPLICATE)[:, 0, :]  # fmt: skip


def blend_seam(
    frame: np.ndarray,
    box: np.ndarray,
    edges: tuple[str, ...],
    band: float,
    method: SeamMethod = "both",
    feather: float | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Remove the seam along the given `edges` of `box` (x0, y0, x1, y1 frame pixels).

    `band`: pixels over which the step correction fades out inside the box and the detail
    ramp outside it; `feather`: half width of the "feather" cross-fade over the edge line
    (default band / 6); `sigma`: the blur of the generator's render for the "ramp" (default
    band / 24: half a pixel of a 96-px render of the face box at the default band of 0.12
    face boxes). Returns a new uint8 frame; pixels farther than `band` from the box border
    (`feather` outside it for "feather") are bit-identical.
    """
    h, w = frame.shape[:2]
    if not np.all(np.isfinite(box)) or not edges:
        return frame
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    # Limit the work to the box plus a margin, clipped to the frame.
    b = int(max(2, round(band)))
    f = int(max(1, round(feather if feather is not None else band / 6)))
    out_w = b if method in ("ramp", "both") else f
    X0, Y0 = max(0, x0 - out_w - 2), max(0, y0 - out_w - 2)
    X1, Y1 = min(w, x1 + out_w + 2), min(h, y1 + out_w + 2)
    if X1 - X0 < 4 or Y1 - Y0 < 4:
        return frame
    roi = frame[Y0:Y1, X0:X1].astype(np.float32)
    bx = np.array([x0 - X0, y0 - Y0, x1 - X0, y1 - Y0], np.float64)
    if method in ("gradient", "both"):
        for edge in edges:
            _correct_step(roi, bx, edge, b)
    if method == "feather":
        _feather_lines(roi, bx, edges, f)
    if method in ("ramp", "both"):
        _ramp_detail(roi, bx, edges, b, sigma if sigma is not None else band / 24)
    out = frame.copy()
    out[Y0:Y1, X0:X1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
    return out


def refine_box(
    frame: np.ndarray, box: np.ndarray, edges: tuple[str, ...], reach: int = 2
) -> np.ndarray:
    """`box` (x0, y0, x1, y1 frame pixels) with each of `edges` moved by up to `reach` whole
    pixels to where this frame's seam is: the line across which the fine detail drops most
    from outside to inside (the median over 6 stretches along the edge, so only a straight
    line scores). `frame_boxes` places the box by the face track, which misses the box the
    generator pasted by a fraction of a pixel to a few pixels (its own detector, its own
    smoothing); the blend is made for the exact line. Edges too near the frame border stay."""
    if not np.all(np.isfinite(box)) or not edges:
        return box
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    bs = max(x1 - x0, 1)
    depth = max(2, int(round(3 * bs / 96)))
    m = reach + depth
    out = np.array([x0, y0, x1, y1], np.float64)
    for edge in edges:
        k = ("left", "top", "right", "bottom").index(edge)
        e = (x0, y0, x1, y1)[k]
        vertical = edge in ("left", "right")
        lo, hi = (y0, y1) if vertical else (x0, x1)
        lo, hi = max(0, lo), min(h if vertical else w, hi)
        limit = w if vertical else h
        if hi - lo < 12 or e - m < 0 or e + m > limit:
            continue
        strip = frame[lo:hi, e - m : e + m] if vertical else frame[e - m : e + m, lo:hi]
        lum = strip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        detail = np.abs(lum - cv2.GaussianBlur(lum, (0, 0), max(0.6, 0.5 * bs / 96)))
        detail = np.log(detail + 0.3)
        across = detail.T if vertical else detail  # rows: across the edge, first = lower coord
        c = np.cumsum(np.pad(across, ((1, 0), (0, 0))), axis=0)
        sign = 1.0 if edge in ("top", "left") else -1.0  # outside is above / left of the line
        steps = []
        for o in range(-reach, reach + 1):
            i = m + o  # the line between rows i - 1 and i
            before = (c[i] - c[i - depth]) / depth
            after = (c[i + depth] - c[i]) / depth
            parts = np.array_split(sign * (before - after), 6)
            steps.append(float(np.median([p.mean() for p in parts])))
        out[k] = e + int(np.argmax(steps)) - reach
    return out


def _capped(d: np.ndarray, full: float = STEP_FULL, zero: float = STEP_ZERO) -> np.ndarray:
    """The step correction, faded out where the step is large: a generator's colour mismatch
    is a few grey levels, while a big step along the box edge is a real contour (a hairline,
    a collar) that happens to lie there: correcting it would smear it into the face."""
    mag = np.abs(d).max(axis=1, keepdims=True)
    return d * np.clip((zero - mag) / (zero - full), 0.0, 1.0)


def _correct_step(roi: np.ndarray, box: np.ndarray, edge: str, band: int, depth: int = 3) -> None:
    """Add the smoothed step across `edge` to the inside of the box, fading over `band`."""
    h, w = roi.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    ramp = np.clip(1.0 - (np.arange(band) + 0.5) / band, 0, 1).astype(np.float32)
    if edge in ("top", "bottom"):
        a, b_ = max(0, x0), min(w, x1)
        e = y0 if edge == "top" else y1
        if b_ - a < 2 or e - depth < 0 or e + depth > h:
            return
        above = roi[e - depth : e, a:b_].mean(0)
        below = roi[e : e + depth, a:b_].mean(0)
        d = _capped(_smooth1d(above - below if edge == "top" else below - above, band / 4))
        if edge == "top":
            n = min(band, y1 - e, h - e)
            roi[e : e + n, a:b_] += ramp[:n, None, None] * d[None]
        else:
            n = min(band, e - y0, e)
            roi[e - n : e, a:b_] += ramp[:n][::-1, None, None] * d[None]
    else:
        a, b_ = max(0, y0), min(h, y1)
        e = x0 if edge == "left" else x1
        if b_ - a < 2 or e - depth < 0 or e + depth > w:
            return
        left = roi[a:b_, e - depth : e].mean(1)
        right = roi[a:b_, e : e + depth].mean(1)
        d = _capped(_smooth1d(left - right if edge == "left" else right - left, band / 4))
        if edge == "left":
            n = min(band, x1 - e, w - e)
            roi[a:b_, e : e + n] += ramp[None, :n, None] * d[:, None]
        else:
            n = min(band, e - x0, e)
            roi[a:b_, e - n : e] += ramp[:n][None, ::-1, None] * d[:, None]


def _feather_lines(roi: np.ndarray, box: np.ndarray, edges: tuple[str, ...], half: int) -> None:
    """Cross-fade with a blurred copy in a +-`half` pixel band over each edge line (tent
    weight, 1 on the line), along the edge's length."""
    h, w = roi.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    weight = np.zeros((h, w), np.float32)
    t = np.arange(-half, half)  # pixel e + t; the line lies between e - 1 and e
    tent = np.clip(1.0 - np.abs(t + 0.5) / half, 0, 1).astype(np.float32)
    for edge in edges:
        if edge in ("top", "bottom"):
            e = y0 if edge == "top" else y1
            rows = e + t
            ok = (rows >= 0) & (rows < h)
            a, b = max(0, x0 - half), min(w, x1 + half)
            weight[rows[ok], a:b] = np.maximum(weight[rows[ok], a:b], tent[ok, None])
        else:
            e = x0 if edge == "left" else x1
            cols = e + t
            ok = (cols >= 0) & (cols < w)
            a, b = max(0, y0 - half), min(h, y1 + half)
            weight[a:b, cols[ok]] = np.maximum(weight[a:b, cols[ok]], tent[None, ok])
    blurred = cv2.GaussianBlur(roi, (0, 0), sigmaX=max(half / 2, 0.8))
    roi += weight[..., None] * (blurred - roi)


def mask_builder(
    landmarks: np.ndarray | None, boxes: np.ndarray | None, cfg: PipelineConfig
) -> Callable[[int, np.ndarray, int], np.ndarray | None] | None:
    """The per-frame paste mask for render: frame i's (N, 10) `landmarks` (frame pixels) and
    its generator box (`boxes`, (N, 4) frame pixels, or None) mapped into the crop of
    geometry g, drawn by geometry.landmark_mask. Returns None for frames without landmarks
    (the pipeline then uses the fixed region_mask), and None overall when there are none."""
    if landmarks is None or np.isnan(landmarks[:, 0]).all():
        return None
    p = cfg.paste

    def build(i: int, g: np.ndarray, size: int) -> np.ndarray | None:
        if i >= len(landmarks) or np.isnan(landmarks[i, 0]):
            return None
        mat = crop_matrix(g, size)
        pts = landmarks[i].reshape(5, 2) @ mat[:, :2].T + mat[:, 2]
        box = None
        if boxes is not None and i < len(boxes) and not np.isnan(boxes[i, 0]):
            x0, y0, x1, y1 = boxes[i]
            corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            box = corners @ mat[:, :2].T + mat[:, 2]
        return landmark_mask(size, p.region, pts, p.feather, box)

    return build


def _detail(x: np.ndarray) -> float:
    """Mean fine detail of a float (H, W, 3) patch: |luma - its blur (sigma 1)|."""
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    if min(lum.shape) < 3:
        return 0.0
    return float(np.abs(lum - cv2.GaussianBlur(lum, (0, 0), 1.0)).mean()) + 1e-3


def _ramp_detail(
    roi: np.ndarray, box: np.ndarray, edges: tuple[str, ...], band: int, sigma: float
) -> None:
    """Outside the box, along each edge: fade from the generator's sharpness at the edge to
    the frame's own over `band` pixels (mix with a blurred copy, weight 1 at the edge falling
    linearly to 0), so the change from the generated inside to the real outside is a
    gradual ramp instead of a line: what a feathered paste of the generator's output would
    have given. The blur is chosen per edge among `sigma` x (0.5 ... 3) as the one whose
    detail next to the edge comes closest to the inside's; where the outside is no sharper
    than the inside (no sharpness seam, e.g. a real contour), nothing is done. The inside is
    left as it is. Works on strips along the edges only (speed)."""
    h, w = roi.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    sigmas = [max(0.5, sigma * f) for f in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)]
    pad = int(np.ceil(3 * sigmas[-1])) + 1
    depth = max(4, band // 6)
    t = (np.arange(band, dtype=np.float32) + 0.5) / band
    ramp = np.clip(1 - t, 0, 1)  # index 0: the pixel next to the edge
    for edge in edges:
        # work in a view turned so that the edge is horizontal with the outside on top
        if edge in ("top", "bottom"):
            a, b = max(0, x0), min(w, x1)
            view = roi if edge == "top" else roi[::-1]
            e = y0 if edge == "top" else h - y1
            view = view[:, a:b] if b > a else None
            lo, hi = max(0, a - pad), min(w, b + pad)
            wide = (roi if edge == "top" else roi[::-1])[:, lo:hi]
            cut = (a - lo, a - lo + (b - a))
        else:
            a, b = max(0, y0), min(h, y1)
            t_roi = roi.transpose(1, 0, 2)
            view = t_roi if edge == "left" else t_roi[::-1]
            e = x0 if edge == "left" else w - x1
            view = view[:, a:b] if b > a else None
            lo, hi = max(0, a - pad), min(h, b + pad)
            wide = (t_roi if edge == "left" else t_roi[::-1])[:, lo:hi]
            cut = (a - lo, a - lo + (b - a))
        n = min(band, e)
        if view is None or n < 2 or e + depth > view.shape[0]:
            continue
        inside = _detail(view[e : e + depth])
        r0 = max(0, e - n - pad)
        src = np.ascontiguousarray(wide[r0:e])
        best, best_err = None, abs(np.log(_detail(view[e - depth : e]) / inside))
        for sg in sigmas:
            blur = cv2.GaussianBlur(src, (0, 0), sigmaX=sg)[:, cut[0] : cut[1]]
            err = abs(np.log(_detail(blur[-depth:]) / inside))
            if err < best_err:
                best, best_err = blur, err
        if best is None:  # the outside is no sharper than the inside: no sharpness seam
            continue
        part = view[e - n : e]
        wgt = ramp[:n][::-1]
        part += wgt[:, None, None] * (best[-n:] - part)
