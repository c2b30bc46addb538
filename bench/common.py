"""Helpers shared by the benchmarks: the real clips, timing, and writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# the real clips: ../shared/data/clips, or $THREPAIR_CLIPS (the GPU runbook's carried copy)
CLIPS = Path(os.environ.get("THREPAIR_CLIPS", ROOT.parent / "shared" / "data" / "clips"))
RESULTS = ROOT / "bench" / "results"
REAL_CLIPS = ["anchor_de_20s", "obama_20s", "hill_8s", "kim_source_7s", "kim_wav2lip_8s"]


def clip_path(name: str) -> Path:
    path = CLIPS / f"{name}.mp4"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmarks need ../shared/data/clips")
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} ({cpu}, {torch.get_num_threads()} torch threads, {gpu})"


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def write_results(name: str, rows: list[dict[str, Any]], columns: list[str], note: str) -> None:
    """Save rows as bench/results/<name>.json and a Markdown table <name>.md; print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "note": note}
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))

    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [f"# {name}", "", note, "", f"Machine: {meta['machine']}, {meta['date']}", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
