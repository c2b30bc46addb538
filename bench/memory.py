"""Memory stays bounded: peak RSS of restoring a clip and the same clip looped to minutes.

    python bench/memory.py [--clip obama_20s] [--minutes 5] [--model passthrough]
    -> bench/results/memory.{json,md}

Each restore runs as its own `threpair restore` process; its peak resident set size is read
with getrusage(RUSAGE_CHILDREN) in a fresh wrapper process, so one run cannot inflate the
other's figure. ffmpeg's own processes are separate and bounded by the pipes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Timer, clip_path, write_results  # noqa: E402
from threpair.video import ffmpeg_exe, probe  # noqa: E402

WRAPPER = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if r.returncode:
    sys.exit(r.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mib(args: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return int(out.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="obama_20s")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--model", default="passthrough")
    args = ap.parse_args()
    src = clip_path(args.clip)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        looped = Path(tmp) / "looped.mp4"
        loops = max(1, round(args.minutes * 60 / probe(src).duration)) - 1
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-stream_loop", str(loops),
             "-i", str(src), "-c", "copy", str(looped)],
            check=True,
        )  # fmt: skip
        for label, video in ((args.clip, src), (f"{args.clip} looped", looped)):
            info = probe(video)
            cmd = [sys.executable, "-m", "threpair", "restore", str(video),
                   str(Path(tmp) / "out.mp4"), "-m", args.model, "-q", "--overwrite"]  # fmt: skip
            with Timer() as t:
                rss = peak_rss_mib(cmd)
            rows.append(
                {"video": label, "frames": info.frame_count, "seconds": info.duration,
                 "peak RSS MiB": rss, "restore s": t.seconds}
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    rows[1]["vs original"] = rows[1]["peak RSS MiB"] / rows[0]["peak RSS MiB"]
    write_results(
        "memory",
        rows,
        ["video", "frames", "seconds", "peak RSS MiB", "vs original", "restore s"],
        f"Peak RSS of `threpair restore -m {args.model}` (the Python process; ffmpeg runs "
        f"beside it, bounded by its pipes). Command: `python bench/memory.py --clip "
        f"{args.clip} --minutes {args.minutes} --model {args.model}`.",
    )


if __name__ == "__main__":
    main()
