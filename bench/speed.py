"""Restore speed against the floor: a plain ffmpeg transcode of the same file, same run.

    python bench/speed.py [--model IDENTITY] [--clips a,b] [--seconds N] [--device auto]
                          [--generator auto]
                          [--warp auto|opencv|torch] [--threads N] [--name speed]
    -> bench/results/speed.{json,md}

For every clip: the time of `ffmpeg -i clip -c:v libx264 -crf 18 -preset medium -pix_fmt
yuv420p -c:a copy` (the floor no post-processor can beat), then `restore` with the
passthrough model and with an identity (its default engine choice); frames per second, the
ratio of each restore to the transcode, and where the time goes (analyze = decode small +
detect + track; plan = engine choice; read/crop/model/paste/write inside the render pass).
Times on shared machines are noisy: the ratios are measured back to back in one run.

What is restored is what users restore (`--input generated`, the default): each clip's cut
made to look like Wav2Lip output by `threpair degrade --gen-res 96` (outside the timing),
with the identity built from the real cut as train-identity builds it (validated), so the
generator estimate reads a generated face; kim_wav2lip_8s is real Wav2Lip output and is
restored as it is, with the identity of kim_source_7s. `--input real` restores the real cuts
(the estimate then reads a sharp face and the plan validates at that resolution).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_CLIPS, Timer, clip_path, write_results  # noqa: E402
from threpair.config import EncodeConfig, PipelineConfig  # noqa: E402
from threpair.engines import EngineRequest, validate_identity  # noqa: E402
from threpair.evaluate import degrade_video  # noqa: E402
from threpair.generators import GENERATORS  # noqa: E402
from threpair.identity import Identity, build_identity  # noqa: E402
from threpair.restore import Passthrough, restore_video  # noqa: E402
from threpair.video import ffmpeg_exe, probe  # noqa: E402


def plain_transcode(src: Path, dst: Path, enc: EncodeConfig) -> None:
    """ffmpeg alone, with the encoder settings restore uses: the floor for restore's time."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src)]
    cmd += ["-map", "0:v:0", "-map", "0:a?", "-c:v", enc.codec, "-crf", str(enc.crf)]
    cmd += ["-preset", enc.preset, "-pix_fmt", enc.pix_fmt, "-c:a", "copy", str(dst)]
    subprocess.run(cmd, check=True)


INPUTS = {
    "generated": "each cut degraded by `threpair degrade --gen-res 96` (kim_wav2lip_8s: real "
    "Wav2Lip output, identity from kim_source_7s)",
    "real": "the real cuts",
}
# clips that are generated already, and the real footage their identity comes from
GENERATED = {"kim_wav2lip_8s": "kim_source_7s"}


def first_seconds(src: Path, seconds: float | None, out: Path) -> Path:
    """The first `seconds` of src as a stream copy at `out` (src itself without `seconds`)."""
    if not seconds:
        return src
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
                    "-t", str(seconds), "-c", "copy", str(out)], check=True)  # fmt: skip
    return out


def identity_source(name: str, cut: Path, tmp: str, seconds: float | None) -> Path:
    """The real footage the clip's identity is built from: the cut itself, or for a clip
    that is generated already the real clip of the person (its first `seconds`)."""
    if name not in GENERATED:
        return cut
    real = GENERATED[name]
    return first_seconds(clip_path(real), seconds, Path(tmp) / f"{real}_identity.mp4")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, help="identity file [default: built from each clip]")
    ap.add_argument("--generator", default="auto")
    ap.add_argument("--temporal-smooth", type=float, default=None, help="default: the engine's")
    ap.add_argument("--seconds", type=float, default=None, help="time only the first N seconds")
    ap.add_argument("--clips", default=",".join(REAL_CLIPS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 CUDA, 8 CPU")
    ap.add_argument("--warp", default="auto", choices=["auto", "opencv", "torch"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--name", default="speed", help="results file name")
    ap.add_argument("--input", default="generated", choices=["generated", "real"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from threpair.inference import resolve_device

    device = resolve_device(args.device)

    def request(ident: Identity) -> EngineRequest:
        return EngineRequest(ident, "auto", args.generator, str(device), args.precision,
                             temporal_smooth=args.temporal_smooth)  # fmt: skip

    fixed = Identity.load(args.model, device=device) if args.model else None
    cuda = device.type == "cuda"
    label = "identity"
    cfg = PipelineConfig(warp=args.warp)  # the transcode uses its encoder settings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            src = first_seconds(clip_path(name), args.seconds, Path(tmp) / f"{name}.mp4")
            real = identity_source(name, src, tmp, args.seconds)
            if args.input == "generated" and name not in GENERATED:
                gen = Path(tmp) / f"{name}_gen.mp4"
                degrade_video(src, gen, GENERATORS["wav2lip"])
                src = gen
            info = probe(src)
            with Timer() as t_ff:
                plain_transcode(src, Path(tmp) / "ff.mp4", cfg.encode)
            row = {"clip": name, "size": f"{info.width}x{info.height}", "frames": info.frame_count}
            row["transcode fps"] = info.frame_count / t_ff.seconds
            with Timer() as t_id:
                ident = fixed or build_identity([real])
                if fixed is None:  # as train-identity builds it (validated)
                    validate_identity(ident, str(device))
            row["identity s"] = t_id.seconds
            model = request(ident)
            for tag, m in (("passthrough", Passthrough()), (label, model)):
                if hasattr(m, "reset"):
                    m.reset()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with Timer() as t:
                    s = restore_video(src, Path(tmp) / "out.mp4", m, cfg, args.batch_size)
                row[f"{tag} fps"] = info.frame_count / t.seconds
                row[f"{tag} / transcode"] = t.seconds / t_ff.seconds
                if tag != "passthrough":
                    row["engine"] = f"{s.engine.get('engine')} @ {s.engine.get('crop_size')} px"
                    if cuda:
                        row["GPU MiB"] = torch.cuda.max_memory_allocated() / 2**20
                    for k, v in s.seconds.items():
                        row[f"{k} ms/frame"] = 1000 * v / info.frame_count
            rows.append(row)
            print(row, flush=True)
    write_results(
        args.name,
        rows,
        list(rows[0]),
        f"End-to-end restore vs a plain ffmpeg transcode (libx264 crf 18 medium, audio copied), "
        f"measured back to back. Input: {INPUTS[args.input]}. Identity "
        f"{args.model or 'built from the real footage, validated'} (engine chosen per clip, "
        f"generator {args.generator}, device {device}, {torch.get_num_threads()} "
        f"torch threads, warp {args.warp}, batch "
        f"{args.batch_size or 'auto'}). Stage columns are for the model run. Command: `python "
        f"bench/speed.py {' '.join(sys.argv[1:])}`.",
    )


if __name__ == "__main__":
    main()
