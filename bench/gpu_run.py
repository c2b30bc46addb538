"""The GPU runbook: every figure issue 13 asks for, from one command, stage by stage.

    bash bench/gpu_run.sh --stages env,tests,anchor          # device call 1 (< 10 min)
    bash bench/gpu_run.sh --stages kim,speed                  # device call 2 (< 10 min)
    bash bench/gpu_run.sh --dry-run                           # here, on the CPU: tiny budgets

Stages (each in its own process with its own time budget; a failed or timed-out stage is
recorded and the run goes on):
- env:    torch, CUDA device, bf16, nvidia-smi, the ffmpeg binary, NVENC / NVDEC tried for real
- tests:  the CUDA tests (tests/test_cuda.py, the device crop/paste, fp16 inference) and the
          model tests
- anchor: `base` trained on anchor_de_20s (first 75%) for a fixed budget or to its plateau,
          then scored on the last 25% degraded at 96 px: degraded input, reference engine,
          SOVQAE, both (bench/train_real_scale.py; curve and crop grid PNG)
- kim:    an identity with a `base` network trained on kim_source_7s, kim_wav2lip_8s restored
          with the reference engine and with the SOVQAE (grid PNG: generated | references |
          sovqae)
- speed:  kim_wav2lip_8s looped to `--speed-seconds` at 1080p: a plain ffmpeg transcode and
          the restore with the reference engine, `base` and `hd` (frames/s, ratio to the
          transcode, time per stage, peak GPU memory, GPU utilisation from nvidia-smi);
          networks from the kim stage when it trained one, else freshly initialised (speed
          does not depend on the weights)

Results go to --out (default bench/results/gpu): gpu_run.json (every stage, merged with the
stages of earlier calls found there), gpu_run.md, gpu_run.log and the PNGs; --export DIR
copies them (at most 8 files, what a device call brings back) to DIR, e.g. $OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("env", "tests", "anchor", "kim", "speed")
# seconds per stage on the GPU (the budget the stage's process is killed at) and the
# training minutes inside it: env + tests + anchor fit one 10-minute device call, kim + speed
# the next; 25 minutes in all
GPU = {
    "budget": {"env": 60, "tests": 150, "anchor": 390, "kim": 300, "speed": 240},
    "anchor_minutes": 4.5, "kim_minutes": 2.5, "speed_seconds": 60.0, "preset": "base",
    "hd": "hd", "batch": 32, "patch": 128, "workers": 8, "val_every": 100, "patience": 8,
    "device": "cuda", "val_crops": 24, "kim_seconds": None,
}  # fmt: skip
DRY = {
    "budget": {"env": 60, "tests": 300, "anchor": 420, "kim": 600, "speed": 420},
    "anchor_minutes": 0.1, "kim_minutes": 0.1, "speed_seconds": 1.0, "preset": "tiny",
    "hd": "tiny", "batch": 4, "patch": 0, "workers": 1, "val_every": 10, "patience": 0,
    "device": "cpu", "val_crops": 8, "kim_seconds": (2.0, 1.0),
}  # fmt: skip
CUDA_TESTS = ["tests/test_cuda.py", "tests/test_geometry_torch.py", "tests/test_inference.py",
              "tests/test_model.py"]  # fmt: skip
DRY_TESTS = ["tests/test_cuda.py", "tests/test_model.py::test_band_split_keeps_the_input_low_band"]


def sh(cmd: list[str], log: Path, timeout: float | None = None, env: dict | None = None,
       check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """Run a command, its output appended to `log` (and echoed); raise on failure if check."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})  # fmt: skip
        f.write(r.stdout)
    sys.stdout.write(r.stdout[-4000:])
    if check and r.returncode != 0:
        tail = r.stdout.strip().splitlines()[-3:]
        raise RuntimeError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} exit {r.returncode}: "
                           + " | ".join(tail))  # fmt: skip
    return r


def clip(name: str) -> Path:
    from bench.common import clip_path

    return clip_path(name)


def ffmpeg_exe() -> str:
    from threpair.video import ffmpeg_exe as exe

    return exe()


# ----------------------------------------------------------------------------- stages


def stage_env(a: argparse.Namespace, log: Path) -> dict[str, Any]:
    import torch

    rec: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
    }  # fmt: skip
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rec.update(gpu=p.name, gpu_mib=p.total_memory // 2**20, capability=f"{p.major}.{p.minor}",
                   bf16=torch.cuda.is_bf16_supported())  # fmt: skip
    if shutil.which("nvidia-smi"):
        r = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"], log, 30, check=False)  # fmt: skip
        rec["nvidia_smi"] = r.stdout.strip()
    ff = ffmpeg_exe()
    rec["ffmpeg"] = ff
    r = sh([ff, "-hide_banner", "-version"], log, 30, check=False)
    rec["ffmpeg_version"] = r.stdout.splitlines()[0] if r.stdout else ""
    enc = sh([ff, "-hide_banner", "-encoders"], log, 30, check=False).stdout
    rec["nvenc_encoders"] = sorted(set(re.findall(r"\b(\w+_nvenc)\b", enc)))
    rec["hwaccels"] = sh([ff, "-hide_banner", "-hwaccels"], log, 30,
                         check=False).stdout.split()[2:]  # fmt: skip
    # tried for real: a listed encoder may still have no device behind it
    r = sh([ff, "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
            "testsrc=size=1920x1080:rate=30", "-t", "1", "-c:v", "h264_nvenc", "-f", "null", "-"],
           log, 60, check=False)  # fmt: skip
    rec["nvenc_works"] = r.returncode == 0
    r = sh([ff, "-hide_banner", "-v", "error", "-hwaccel", "cuda", "-i",
            clip("kim_wav2lip_8s"), "-t", "1", "-f", "null", "-"],
           log, 60, check=False)  # fmt: skip
    rec["nvdec_works"] = r.returncode == 0 and "cuda" in rec["hwaccels"]
    return rec


def stage_tests(a: argparse.Namespace, log: Path) -> dict[str, Any]:
    tests = DRY_TESTS if a.dry_run else CUDA_TESTS
    r = sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], log,
           check=False, env={"THREPAIR_CACHE": str(a.work / "cache")})  # fmt: skip
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", last)}
    if r.returncode not in (0, 5):
        raise RuntimeError(f"tests: {last}")
    return {"summary": last, **counts, "test_files": tests}


def stage_anchor(a: argparse.Namespace, log: Path) -> dict[str, Any]:
    c = a.cfg
    name = f"anchor_{c['preset']}"
    sh([sys.executable, ROOT / "bench" / "train_real_scale.py", "--clip", "anchor_de_20s",
        "--preset", c["preset"], "--device", c["device"], "--minutes", c["anchor_minutes"],
        "--variants", a.anchor_variants, "--batch", c["batch"], "--patch", c["patch"],
        "--workers", c["workers"], "--patience", c["patience"], "--val-every", c["val_every"],
        "--val-crops", c["val_crops"], "--name", name, "--out-dir", a.out,
        "--work", a.work / "anchor"], log)  # fmt: skip
    res = json.loads((a.out / f"{name}.json").read_text())
    return {"rows": res["rows"], "training": [{k: v for k, v in t.items() if k != "history"}
            for t in res["training"]], "files": [f"{name}.png", f"{name}_grid.jpg"]}  # fmt: skip


def threpair_json(args: list[Any], log: Path, timeout: float | None = None) -> dict:
    r = sh([sys.executable, "-m", "threpair", *args, "--json"], log, timeout)
    return json.loads(r.stdout.strip().splitlines()[-1])


def stage_kim(a: argparse.Namespace, log: Path) -> dict[str, Any]:
    import numpy as np

    from threpair.config import PipelineConfig
    from threpair.demo import contact_sheet
    from threpair.restore import analyze_faces
    from threpair.video import probe

    c = a.cfg
    ident = a.work / "kim.safetensors"
    source, gen = clip("kim_source_7s"), clip("kim_wav2lip_8s")
    if c["kim_seconds"]:  # the dry run: the first seconds of each
        cut = []
        for path, seconds in zip((source, gen), c["kim_seconds"]):
            cut.append(a.work / f"cut_{path.name}")
            sh([ffmpeg_exe(), "-y", "-v", "error", "-i", path, "-t", seconds, "-c", "copy",
                cut[-1]], log)  # fmt: skip
        source, gen = cut
    built = threpair_json(["train-identity", source, "--preset", c["preset"],
                           "--minutes", c["kim_minutes"], "--device", c["device"],
                           "--batch-size", c["batch"], "--workers", c["workers"],
                           "--patch-size", c["patch"] if c["patch"] else 0,
                           "--patience", c["patience"], "--out", ident], log)  # fmt: skip
    rec: dict[str, Any] = {"identity": {k: built.get(k) for k in ("network", "gains")}}
    videos, labels = [gen], ["generated (Wav2Lip+GFPGAN)"]
    for engine in ("references", "sovqae"):
        out = a.work / f"kim_{engine}.mp4"
        s = threpair_json(["restore", gen, out, "-m", ident, "--engine", engine,
                           "--generator", "wav2lip", "--device", c["device"], "--overwrite"],
                          log)  # fmt: skip
        rec[engine] = {k: s.get(k) for k in ("seconds", "engine", "confidence", "warnings")}
        videos.append(out)
        labels.append(engine)
    geo = analyze_faces(probe(gen), PipelineConfig()).geometry
    cx, cy, side = (float(np.nanmedian(geo[:, i])) for i in range(3))
    h = side * 0.45  # the face, not the whole 1.5-box crop
    box = tuple(int(round(v)) for v in (cx - h, cy - h, cx + h, cy + h))
    contact_sheet(videos, a.out / "kim_grid.png", labels, 4, box)
    rec["files"] = ["kim_grid.png"]
    return rec


def _gpu_util_sampler(samples: list[float], stop: threading.Event) -> None:
    """GPU utilisation (%) from nvidia-smi every 200 ms until `stop`."""
    if not shutil.which("nvidia-smi"):
        return
    p = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,"
                          "nounits", "-lms", "200"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if stop.is_set():
                break
            if line.strip().isdigit():
                samples.append(float(line))
    finally:
        p.terminate()


def stage_speed(a: argparse.Namespace, log: Path) -> dict[str, Any]:
    import torch

    from threpair.config import PipelineConfig
    from threpair.engines import EngineRequest
    from threpair.identity import Identity, build_identity
    from threpair.model import SOVQAE, get_preset
    from threpair.restore import restore_video
    from threpair.video import probe

    c = a.cfg
    device = c["device"]
    looped = a.work / "kim_loop.mp4"
    sh([ffmpeg_exe(), "-y", "-v", "error", "-stream_loop", "-1", "-i", clip("kim_wav2lip_8s"),
        "-t", c["speed_seconds"], "-c", "copy", looped], log)  # fmt: skip
    info = probe(looped)
    cfg = PipelineConfig()
    enc = cfg.encode
    t0 = time.perf_counter()
    sh([ffmpeg_exe(), "-y", "-v", "error", "-i", looped, "-c:v", enc.codec, "-crf", enc.crf,
        "-preset", enc.preset, "-pix_fmt", enc.pix_fmt, "-c:a", "copy", a.work / "plain.mp4"],
       log)  # fmt: skip
    transcode = time.perf_counter() - t0
    kim = a.work / "kim.safetensors"
    ident = Identity.load(kim) if kim.is_file() else build_identity([clip("kim_source_7s")])
    trained = ident.network_config is not None and ident.network_meta.get("preset") == c["preset"]
    rows: list[dict[str, Any]] = [{
        "method": "plain ffmpeg transcode", "fps": info.frame_count / transcode,
        "seconds": transcode, "x transcode": 1.0,
    }]  # fmt: skip
    for label, preset in (("references", None), ("base", c["preset"]), ("hd", c["hd"])):
        if preset is not None and not (label == "base" and trained):
            cfg_net = get_preset(preset)
            torch.manual_seed(0)
            ident.network, ident.network_config = SOVQAE(cfg_net).eval(), cfg_net
            ident.network_meta = {"preset": preset, "crop": ident.crop.to_dict()}
            ident.gains.pop("sovqae", None)
        engine = "references" if preset is None else "sovqae"
        request = EngineRequest(ident, engine, "wav2lip", device, "auto")
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_gpu_util_sampler, args=(samples, stop), daemon=True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sampler.start()
        t0 = time.perf_counter()
        s = restore_video(looped, a.work / f"speed_{label}.mp4", request, cfg)
        seconds = time.perf_counter() - t0
        stop.set()
        row = {
            "method": f"restore, {label}" + ("" if preset is None else f" ({preset}"
                                             + (", trained)" if label == "base" and trained
                                                else ", untrained weights)")),
            "fps": info.frame_count / seconds, "seconds": seconds,
            "x transcode": seconds / transcode,
            "crop px": s.engine.get("crop_size"),
            "GPU MiB": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            "GPU util %": sum(samples) / len(samples) if samples else None,
            **{f"{k} ms/frame": 1000 * v / info.frame_count for k, v in s.seconds.items()},
        }  # fmt: skip
        rows.append(row)
        print(row, flush=True)
    return {"clip": f"kim_wav2lip_8s looped to {info.frame_count} frames "
            f"({info.width}x{info.height})", "rows": rows}  # fmt: skip


RUNNERS = {"env": stage_env, "tests": stage_tests, "anchor": stage_anchor, "kim": stage_kim,
           "speed": stage_speed}  # fmt: skip


# ----------------------------------------------------------------------------- report


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) >= 1000 else f"{v:.2f}"
    return "" if v is None else str(v)


def table(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not isinstance(r[k], dict | list)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return out + ["| " + " | ".join(fmt(r.get(k)) for k in cols) + " |" for r in rows]


def write_markdown(out: Path, results: dict[str, Any]) -> None:
    dry = " (DRY RUN: CPU, tiny preset, tiny budgets: not GPU figures)"
    meta = results["meta"]
    lines = ["# GPU runbook results", "",
             f"Written {meta['date']} by `{meta['command']}`{dry if meta['dry_run'] else ''}.",
             ""]  # fmt: skip
    for name in STAGES:
        st = results["stages"].get(name)
        if st is None:
            continue
        lines += [f"## {name}: {st['status']} ({st['seconds']:.0f} s of {st['budget']} s)", ""]
        if st["status"] != "ok":
            lines += ["```", st.get("error", ""), "```", ""]
            continue
        rec = st["result"]
        if name == "env":
            lines += [f"- {k}: {v}" for k, v in rec.items()] + [""]
        elif name == "tests":
            lines += [f"`{rec['summary']}` ({', '.join(rec['test_files'])})", ""]
        elif name == "anchor":
            for t in rec["training"]:
                th = t.get("theory", {})
                lines.append(f"- {t['variant']}: {t['steps']} steps in {t['seconds'] / 60:.1f} "
                             f"min (stopped by {t['stopped_by']}), peak GPU "
                             f"{fmt(t.get('gpu_peak_mib'))} MiB, NRoUB {fmt(th.get('nroub'))}")
            lines += ["", *table(rec["rows"]), ""]
        elif name == "kim":
            ident = rec["identity"]
            for eng, g in (ident.get("gains") or {}).items():
                for res, v in g.items():
                    lines.append(f"- validated {eng} @ {res} px: face {v['gain']:+.2f} dB, "
                                 f"mouth {v['mouth_gain']:+.2f} dB")
            for eng in ("references", "sovqae"):
                s = rec.get(eng, {})
                tot = (s.get("seconds") or {}).get("total")
                used = (s.get("engine") or {}).get("engine")
                lines.append(f"- restore with {eng}: {fmt(tot)} s, engine {used}")
            lines.append("")
        elif name == "speed":
            lines += [rec["clip"], "", *table(rec["rows"]), ""]
        for f in rec.get("files", []) if isinstance(rec, dict) else []:
            lines += [f"![{f}]({f})", ""]
    (out / "gpu_run.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, tiny budgets")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    ap.add_argument("--work", type=Path, default=Path("/tmp/threpair_gpu_run"))
    ap.add_argument("--export", type=Path, help="copy the results (<= 8 files) here, e.g. $OUT")
    ap.add_argument("--anchor-variants", default="band", help="band,full compares both")
    ap.add_argument("--run-stage", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.cfg = DRY if a.dry_run else GPU
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    log = a.out / "gpu_run.log"
    if a.run_stage:  # child: one stage, its record as JSON
        rec = RUNNERS[a.run_stage](a, log)
        (a.work / f"stage_{a.run_stage}.json").write_text(json.dumps(rec, default=str))
        return
    path = a.out / "gpu_run.json"
    results = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
    results["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "dry_run": a.dry_run,
                       "command": "bash bench/gpu_run.sh " + " ".join(sys.argv[1:]),
                       "host": platform.node()}  # fmt: skip
    for name in [s for s in a.stages.split(",") if s]:
        if name not in RUNNERS:
            raise SystemExit(f"unknown stage {name}: use {', '.join(STAGES)}")
        budget = a.cfg["budget"][name]
        print(f"=== {name} (budget {budget} s)", flush=True)
        (a.work / f"stage_{name}.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--run-stage", name, "--out", a.out, "--work", a.work,
               "--anchor-variants", a.anchor_variants] + (["--dry-run"] if a.dry_run else [])
        st: dict[str, Any] = {"budget": budget}
        try:
            r = subprocess.run([str(c) for c in cmd], timeout=budget, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            sys.stdout.write(r.stdout[-3000:])
            rec_path = a.work / f"stage_{name}.json"
            if r.returncode == 0 and rec_path.is_file():
                st.update(status="ok", result=json.loads(rec_path.read_text()))
            else:
                st.update(status="failed", error="\n".join(r.stdout.strip().splitlines()[-15:]))
        except subprocess.TimeoutExpired as e:
            got = e.stdout or ""
            got = got if isinstance(got, str) else got.decode("utf-8", "replace")
            st.update(status="timeout", error="\n".join(got.strip().splitlines()[-10:]))
        st["seconds"] = time.perf_counter() - t0
        results["stages"][name] = st
        print(f"=== {name}: {st['status']} in {st['seconds']:.0f} s", flush=True)
        path.write_text(json.dumps(results, indent=2, default=str))
        write_markdown(a.out, results)
    if a.export:
        a.export.mkdir(parents=True, exist_ok=True)
        files = ["gpu_run.json", "gpu_run.md", "gpu_run.log"]
        files += sorted(p.name for p in [*a.out.glob("*.png"), *a.out.glob("*.jpg")])[:5]
        for f in files:
            if (a.out / f).is_file():
                shutil.copy2(a.out / f, a.export / f)
    failed = [n for n, s in results["stages"].items() if s["status"] != "ok"]
    print(f"results in {a.out}; stages not ok: {', '.join(failed) or 'none'}")


if __name__ == "__main__":
    main()
