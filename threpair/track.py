"""Follow one identity's face through a video and turn it into smooth crop geometry.

Pure functions over per-frame detections (no video I/O):

    tracks = link_tracks(detections, cfg)          # detections: one list per frame (None = not run)
    target = select_identity(tracks)               # the largest, most persistent face
    raw = crop_params(target, n_frames, crop_cfg)  # (N, 4) cx, cy, side, angle; NaN = no face
    geo = fill_gaps(raw, max_gap) -> smooth_params(geo, window)

Because threpair processes files, smoothing is non-causal (a centred window), which removes
detector jitter without the lag a causal filter would add.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from threpair.config import CropConfig, TrackConfig
from threpair.detect import Detection


@dataclass
class Track:
    """Detections of one face over time: frame index -> Detection."""

    dets: dict[int, Detection] = field(default_factory=dict)

    @property
    def last_frame(self) -> int:
        return max(self.dets)

    @property
    def first_frame(self) -> int:
        return min(self.dets)

    @property
    def weight(self) -> float:
        """Largest and most persistent: the sum of box areas over the frames it is seen in."""
        return sum(d.area for d in self.dets.values())

    def mean_area(self) -> float:
        return self.weight / max(1, len(self.dets))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_tracks(detections: list[list[Detection] | None], cfg: TrackConfig) -> list[Track]:
    """Greedy IoU linking of detections into tracks.

    `detections[i]` is the list of faces found in frame i, or None where detection did not
    run (every-k-th detection). A track may skip up to `cfg.max_gap` frames.
    """
    tracks: list[Track] = []
    for i, faces in enumerate(detections):
        if not faces:
            continue
        live = [t for t in tracks if i - t.last_frame <= cfg.max_gap + 1]
        pairs = sorted(
            (
                (iou(t.dets[t.last_frame].box, d.box), ti, di)
                for ti, t in enumerate(live)
                for di, d in enumerate(faces)
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        for overlap, ti, di in pairs:
            if overlap < cfg.min_iou or ti in used_t or di in used_d:
                continue
            live[ti].dets[i] = faces[di]
            used_t.add(ti)
            used_d.add(di)
        for di, d in enumerate(faces):
            if di not in used_d:
                tracks.append(Track({i: d}))
    return tracks


def select_identity(tracks: list[Track], min_area_ratio: float = 0.35) -> Track:
    """The target face: the heaviest track, joined with later/earlier tracks of a face of
    similar size that never appears at the same time (the same person after the face was lost
    for longer than the gap bound). Faces seen side by side with the target are never joined,
    so the crop cannot jump between people in a multi-face video. Empty Track if none."""
    if not tracks:
        return Track()
    ranked = sorted(tracks, key=lambda t: t.weight, reverse=True)
    target = Track(dict(ranked[0].dets))
    ref_area = ranked[0].mean_area()
    spans = [(ranked[0].first_frame, ranked[0].last_frame)]
    for t in ranked[1:]:
        if t.mean_area() < min_area_ratio * ref_area or len(t.dets) < 3:
            continue
        if any(t.first_frame <= b and a <= t.last_frame for a, b in spans):
            continue
        target.dets.update(t.dets)
        spans.append((t.first_frame, t.last_frame))
    return target


def detection_params(det: Detection, crop: CropConfig) -> np.ndarray:
    """Crop geometry for one detection: (cx, cy, side, angle in radians).

    The square is centred on the box, shifted down by `crop.shift_y` box heights, with side
    `crop.margin` times the longer box side; the angle is the eye line's roll (0 without
    landmarks or with `align_roll` off).
    """
    x0, y0, x1, y1 = det.box
    w, h = x1 - x0, y1 - y0
    angle = 0.0
    if crop.align_roll and det.landmarks is not None:
        (rx, ry), (lx, ly) = det.landmarks[0], det.landmarks[1]
        angle = float(np.arctan2(ly - ry, lx - rx))
    return np.array(
        [(x0 + x1) / 2, (y0 + y1) / 2 + crop.shift_y * h, crop.margin * max(w, h), angle]
    )


def crop_params(track: Track, n_frames: int, crop: CropConfig) -> np.ndarray:
    """(n_frames, 4) float array of raw per-frame crop geometry; NaN rows where undetected."""
    out = np.full((n_frames, 4), np.nan)
    for i, det in track.dets.items():
        if i < n_frames:
            out[i] = detection_params(det, crop)
    return out


def landmark_params(track: Track, n_frames: int) -> np.ndarray:
    """(n_frames, 10) float array of the five landmarks (x0, y0, ..., x4, y4) in frame pixels,
    in the detector's order (see detect.Detection); NaN rows where undetected or where the
    backend gives no landmarks. fill_gaps and smooth_params work on it as on crop_params."""
    out = np.full((n_frames, 10), np.nan)
    for i, det in track.dets.items():
        if i < n_frames and det.landmarks is not None:
            out[i] = np.asarray(det.landmarks, np.float64).reshape(10)
    return out


def fill_gaps(params: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly interpolate NaN runs of at most `max_gap` frames between two known frames.

    Longer runs and runs at the start or end stay NaN: those frames pass through untouched.
    """
    out = params.copy()
    known = np.flatnonzero(~np.isnan(params[:, 0]))
    for a, b in zip(known, known[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            t = (np.arange(1, gap + 1) / (gap + 1))[:, None]
            out[a + 1 : b] = params[a] * (1 - t) + params[b] * t
    return out


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive True values."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def smooth_params(params: np.ndarray, window: int) -> np.ndarray:
    """Centred Gaussian smoothing (sigma = window / 2, support +-window frames) of each
    contiguous run of known rows; NaN rows and run boundaries are respected (weights are
    renormalised near the ends, so a run is never pulled towards a missing neighbour)."""
    if window <= 0:
        return params.copy()
    out = params.copy()
    offsets = np.arange(-window, window + 1)
    kernel = np.exp(-0.5 * (offsets / max(window / 2, 1e-6)) ** 2)
    for a, b in segments(~np.isnan(params[:, 0])):
        run = params[a:b]
        n = b - a
        acc = np.zeros_like(run)
        norm = np.zeros((n, 1))
        for off, k in zip(offsets, kernel):
            lo, hi = max(0, -off), min(n, n - off)
            if lo >= hi:
                continue
            acc[lo:hi] += k * run[lo + off : hi + off]
            norm[lo:hi] += k
        out[a:b] = acc / norm
    return out
