"""The plumbing benchmark: how clean is the passthrough round trip, how well are faces found
and tracked, and what does the pipeline cost next to a plain transcode.

    python bench/passthrough.py            # -> bench/results/passthrough.{json,md}

For every real clip: detection rate; crop-centre jitter (mean frame-to-frame displacement
in pixels) of the raw detections vs the smoothed geometry; PSNR of `restore --model
passthrough` against a plain re-encode with the same encoder settings (whole frame and face
region) in "replace" and "residual" paste modes; and the restore time as a ratio to the
plain transcode measured in the same run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_CLIPS, Timer, clip_path, write_results  # noqa: E402
from threpair.config import EncodeConfig, PasteConfig, PipelineConfig  # noqa: E402
from threpair.geometry import crop_matrix, frame_mask, region_mask  # noqa: E402
from threpair.metrics import crop_jitter, psnr  # noqa: E402
from threpair.restore import analyze_faces, restore_video  # noqa: E402
from threpair.video import VideoWriter, probe, read_frames  # noqa: E402


def transcode(src: Path, dst: Path, encode: EncodeConfig) -> None:
    info = probe(src)
    with VideoWriter(dst, info.width, info.height, info.fps, info.path, encode) as w:
        for f in read_frames(info):
            w.write(f)


def compare(out: Path, ref: Path, masks: list[np.ndarray | None]) -> tuple[float, float]:
    whole, face = [], []
    for m, x, y in zip(masks, read_frames(probe(out)), read_frames(probe(ref))):
        whole.append(np.mean((x.astype(np.float64) - y) ** 2))
        if m is not None:
            face.append(psnr(x, y, mask=m > 0.5))
    return float(10 * np.log10(255**2 / max(np.mean(whole), 1e-12))), float(np.mean(face))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in REAL_CLIPS:
            src = clip_path(name)
            cfg = PipelineConfig()
            info = probe(src)
            analysis = analyze_faces(info, cfg)
            m = region_mask(cfg.crop.size, "face", cfg.crop, cfg.paste.feather)
            masks = [
                None
                if np.isnan(g[0])
                else frame_mask(crop_matrix(g, cfg.crop.size), m, info.width, info.height)
                for g in analysis.geometry
            ]
            ref = Path(tmp) / f"{name}_ref.mp4"
            with Timer() as t_ref:
                transcode(src, ref, cfg.encode)
            row = {
                "clip": name,
                "size": f"{info.width}x{info.height}",
                "frames": info.frame_count,
                "detection %": 100 * analysis.detection_rate,
                "jitter raw px": crop_jitter(analysis.raw[:, :2]),
                "jitter smooth px": crop_jitter(analysis.geometry[:, :2]),
            }
            for mode in ("replace", "residual"):
                out = Path(tmp) / f"{name}_{mode}.mp4"
                run_cfg = PipelineConfig(paste=PasteConfig(mode=mode))
                with Timer() as t_run:
                    restore_video(src, out, cfg=run_cfg)
                frame_db, face_db = compare(out, ref, masks)
                row[f"{mode} frame dB"] = frame_db
                row[f"{mode} face dB"] = face_db
                if mode == "replace":
                    row["restore/transcode"] = t_run.seconds / t_ref.seconds
                    row["restore fps"] = info.frame_count / t_run.seconds
            rows.append(row)
            print(row, flush=True)
    columns = list(rows[0])
    write_results(
        "passthrough",
        rows,
        columns,
        "`restore --model passthrough` vs a plain re-encode (libx264 crf 18 medium, same run). "
        "Jitter: mean frame-to-frame crop-centre displacement. Face dB: PSNR inside the paste "
        "mask (>0.5). Command: `python bench/passthrough.py`.",
    )


if __name__ == "__main__":
    main()
