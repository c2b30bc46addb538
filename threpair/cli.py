"""The `threpair` command line: one command per verb; parses, calls the library, prints.

Library code raises ThrepairError subclasses; here they become one red line on stderr and a
non-zero exit code (2 for bad input, 1 for other failures, 130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from threpair import __version__
from threpair.config import (
    ConfidenceConfig,
    CropConfig,
    DetectConfig,
    EncodeConfig,
    PasteConfig,
    PipelineConfig,
    TrackConfig,
)
from threpair.errors import InputError, ThrepairError


class MatchGrid(str, Enum):
    """The reference engine's matching grid, in pixels of the crop."""

    fine = "2"
    coarse = "4"


class Engine(str, Enum):
    auto = "auto"
    references = "references"
    sovqae = "sovqae"
    passthrough = "passthrough"


app = typer.Typer(
    name="threpair",
    help="Repair lip-synced talking-head video with a model trained on the real person.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one red line and an exit code; no tracebacks."""
    try:
        yield
    except InputError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    except ThrepairError as e:
        from threpair.batch import received_signal

        if received_signal() is None:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
        _interrupted(received_signal())
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP under interrupt_on_sigterm
        _interrupted(str(e.args[0]) if e.args else "")


def _interrupted(signal_name: str | None) -> None:
    """The one line for Ctrl-C / SIGTERM / SIGHUP, then exit 130."""
    name = signal_name if signal_name and signal_name.startswith("SIG") else ""
    err.print(
        f"[yellow]interrupted{f' ({name})' if name else ''}[/]: no partial output was left "
        "behind (an interrupted train-identity continues with --resume)"
    )
    raise typer.Exit(130) from None


class Codec(str, Enum):
    """Video encoders `restore` writes with (crf and preset apply to x264/x265)."""

    libx264 = "libx264"
    libx265 = "libx265"
    vp9 = "libvpx-vp9"


class Preset(str, Enum):
    """x264/x265 speed presets."""

    ultrafast = "ultrafast"
    superfast = "superfast"
    veryfast = "veryfast"
    faster = "faster"
    fast = "fast"
    medium = "medium"
    slow = "slow"
    slower = "slower"
    veryslow = "veryslow"
    placebo = "placebo"


def check_device(device: str) -> None:
    """Refuse a --device this machine cannot use, before any work."""
    if device in ("auto", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise InputError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise InputError(
            f"--device {device}: no CUDA GPU is available to this torch "
            f"({torch.__version__}); use --device cpu or auto"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) here")


def check_writable_file(path: Path, option: str, create_folders: bool = False) -> None:
    """Refuse an output file path that cannot be written, before any work: a folder, under
    a file, in a missing folder (unless `create_folders`: then the nearest existing one
    must be writable), or in a folder without write permission."""
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file name")
    folder = path.absolute().parent
    while not folder.exists() and create_folders and folder != folder.parent:
        folder = folder.parent
    if not folder.exists():
        raise InputError(f"{option} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: folder {folder} is not writable")


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator:
    """A progress callback (stage, done, total) drawing one rich bar per stage.

    The bars start on the first update, so an early error prints nothing but itself.
    """
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        _DoneOfTotal(),
        TimeRemainingColumn(),
        console=err,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: float, total: float, unit: str = "") -> None:
        """`unit` "s": done and total are seconds (shown as m:ss), else counts."""
        if not tasks:
            bars.start()
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total or None, unit=unit)
        bars.update(tasks[stage], completed=done, total=max(total, done) or None)

    try:
        yield update
    finally:
        if tasks:
            bars.stop()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class _DoneOfTotal(ProgressColumn):
    """`done/total`, as m:ss for a task whose unit is seconds (a time-bounded training)."""

    def render(self, task) -> Text:
        total = task.total
        if task.fields.get("unit") == "s":
            return Text(f"{_clock(task.completed)}/{_clock(total) if total else '?'}")
        return Text(f"{int(task.completed)}/{int(total) if total is not None else '?'}")


def version_callback(value: bool) -> None:
    if value:
        out.print(f"threpair {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Repair lip-synced talking-head video with a model trained on the real person."""


def load_face_model(
    spec: str,
    device: str,
    hysteresis: float = 0.0,
    smooth: float | None = None,
    precision: str = "auto",
    engine: str = "auto",
    generator: str = "auto",
    references: int | None = None,
    match_grid: int | None = None,
):
    """`passthrough` or an identity file -> what restore_video takes (a FaceModel, or an
    EngineRequest that picks the engine per video). `match_grid` (px): the reference
    engine's matching grid, with the patch and top-k measured best for it (default: 2)."""
    from threpair.engines.attention import AttentionConfig
    from threpair.restore import Passthrough

    if smooth is not None and not 0 <= smooth < 1:
        raise InputError(f"--temporal-smooth {smooth}: use a value in [0, 1)")
    if references is not None and references < 1:
        raise InputError(f"--references {references}: search at least 1 reference")
    if spec == "passthrough":
        return Passthrough()
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{spec}: identity not found (give a .safetensors file or 'passthrough')")
    from threpair.engines import EngineRequest
    from threpair.identity import Identity
    from threpair.inference import resolve_device, resolve_precision

    try:  # checked before loading, so only this setting's errors become this message
        dev = resolve_device(device)
        resolve_precision(precision, dev)
    except ValueError as e:  # an unknown name, or fp16 without CUDA
        raise InputError(f"--precision {precision}: {e}") from None
    ident = Identity.load(path, device=dev)
    refs = {} if references is None else {"refs": references}
    attention = AttentionConfig.for_grid(match_grid or 2, **refs)
    return EngineRequest(
        ident, engine, generator, str(dev), precision, hysteresis, smooth, attention=attention
    )


@app.command()
def restore(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Input video(s), folder(s) or quoted glob patterns, then the output: a file "
            "for one input file, else a folder that mirrors the inputs' names.",
            show_default=False,
            metavar="IN... OUT",
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Identity file (train-identity), or 'passthrough'.")
    ] = "passthrough",
    engine: Annotated[
        Engine, typer.Option(help="auto: the identity's best engine with a validated gain.")
    ] = Engine.auto,
    generator: Annotated[
        str,
        typer.Option(
            help="Face resolution of the lip-sync generator: auto (estimated), wav2lip, "
            "videoretalking, sadtalker, musetalk, latentsync, or pixels."
        ),
    ] = "auto",
    region: Annotated[
        str, typer.Option(help="Part of the face to repair: face, lower or mouth.")
    ] = "face",
    detector: Annotated[str, typer.Option(help="Face detector: retinaface or s3fd.")] = (
        "retinaface"
    ),
    detector_weights: Annotated[
        Path | None, typer.Option(help="S3FD weights file (s3fd only).")
    ] = None,
    detect_every: Annotated[
        int,
        typer.Option(
            min=1,
            max=TrackConfig().max_gap + 1,  # longer gaps are not bridged: faces would be lost
            help="Detect on every k-th frame; the frames between are detected too where "
            "the face moved more than 4% of its size, else interpolated (1: every frame).",
        ),
    ] = 2,
    detect_max_side: Annotated[
        int, typer.Option(min=64, help="Downscale frames to this longer side for detection.")
    ] = 640,
    smooth: Annotated[
        int, typer.Option(min=0, max=1000, help="Geometry smoothing window (frames each side).")
    ] = 4,
    margin: Annotated[
        float, typer.Option(min=1.0, max=4.0, help="Crop side as a multiple of the face box.")
    ] = 1.5,
    paste_mode: Annotated[
        str, typer.Option(help="residual (add the model's change) or replace (paste its output).")
    ] = "residual",
    color_match: Annotated[bool, typer.Option(help="Match the crop's colours to the frame.")] = (
        False
    ),
    crf: Annotated[
        int, typer.Option(min=0, max=51, help="x264/x265 quality (lower = better).")
    ] = 18,
    preset: Annotated[Preset, typer.Option(help="x264/x265 speed preset.")] = Preset.medium,
    codec: Annotated[
        Codec, typer.Option(help="Video encoder (.webm outputs are always VP9).")
    ] = Codec.libx264,
    batch_size: Annotated[
        int | None, typer.Option(help="Crops per model call [default: 32 on CUDA, 8 on CPU].")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(help="auto (fp16 on CUDA, bf16 on CPUs that have it, else fp32), fp32, bf16."),
    ] = "auto",
    hysteresis: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Keep last frame's code unless the new one is nearer by this x delta_min.",
        ),
    ] = 0.0,
    references: Annotated[
        int | None,
        typer.Option(
            help="Bank references the reference engine searches per frame (the nearest "
            "ones): fewer is faster and a little less sharp. Default: all (64 in a "
            "default bank).",
            show_default=False,
        ),
    ] = None,
    match_grid: Annotated[
        MatchGrid,
        typer.Option(
            help="Pixels per cell of the reference engine's matching grid: 2 is sharper "
            "(+0.1-0.2 dB on the face, +0.15-0.3 on the mouth), 4 about 1.4x faster end "
            "to end on a CPU.",
        ),
    ] = MatchGrid.fine,
    temporal_smooth: Annotated[
        float | None,
        typer.Option(
            help="Share of the previous frame's correction kept (0 = off): less flicker. "
            "Default: 0 for the reference engine (steady already), 0.5 for the sovqae.",
            show_default=False,
        ),
    ] = None,
    confidence_blend: Annotated[
        bool, typer.Option(help="Paste low-confidence frames at reduced strength.")
    ] = True,
    min_strength: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Paste strength for frames far outside the confident range."
        ),
    ] = 0.25,
    report: Annotated[
        Path | None, typer.Option(help="Write per-frame confidence, detection and timing JSON.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Write an HTML report (videos side by side, plots, summary): a .html file "
            "for one input, else a folder (one page per video plus index.html)."
        ),
    ] = None,
    seam: Annotated[
        str | None,
        typer.Option(
            help="Generator box seam: auto (find it and blend across) or off "
            "[default: auto with an identity, off with passthrough (the exact plumbing)]."
        ),
    ] = None,
    seam_method: Annotated[
        str,
        typer.Option(help="Seam blend: both (gradient + ramp), gradient, ramp or feather."),
    ] = "both",
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace outputs that already exist (without it, an existing file output is "
            "refused and a folder run skips files whose output exists)."
        ),
    ] = False,
    shard: Annotated[
        str | None, typer.Option(help="Folder output: do only shard I of N (1-based), e.g. 2/8.")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Folder output: files restored at once.")
    ] = 1,
    log: Annotated[
        Path | None, typer.Option(help="Folder output: append one JSON line per file here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Repair the face in each input video (audio, fps and frame count preserved).

    One file:  threpair restore alice_w2l.mp4 alice_fixed.mp4 -m checkpoints/alice.safetensors

    A folder:  threpair restore generated/ fixed/ -m checkpoints/alice.safetensors --log run.jsonl
    (subfolders too; fixed/ mirrors the names; finished outputs are skipped on a rerun; exit 1
    when any file failed)

    An existing output is never replaced without --overwrite: a file output is refused, a
    folder run skips it.
    """
    from threpair.batch import interrupt_on_sigterm, is_single_file
    from threpair.video import check_name_length, check_output_path

    with user_errors(), interrupt_on_sigterm():  # SIGTERM/SIGHUP: cleaned up like Ctrl-C
        if len(paths) < 2:
            raise InputError("give the input(s) and then the output: threpair restore IN... OUT")
        *inputs, output = paths
        if str(output) == "-":
            raise InputError("OUT -: writing to stdout is not supported; give a file or folder")
        check_name_length(output)
        if region not in ("face", "lower", "mouth"):
            raise InputError(f"--region {region}: use face, lower or mouth")
        if paste_mode not in ("replace", "residual"):
            raise InputError(f"--paste-mode {paste_mode}: use replace or residual")
        if detector not in ("retinaface", "s3fd"):
            raise InputError(f"--detector {detector}: use retinaface or s3fd")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size {batch_size}: give at least 1")
        if seam is not None and seam not in ("auto", "off"):
            raise InputError(f"--seam {seam}: use auto or off")
        if seam_method not in ("both", "gradient", "ramp", "feather"):
            raise InputError(f"--seam-method {seam_method}: use both, gradient, ramp or feather")
        single = is_single_file(inputs, output)
        if html is not None:
            check_html_target(html, single)
        if single and (shard is not None or log is not None):
            raise InputError("--shard and --log need a folder output (OUT is a file name here)")
        if not single and report is not None:
            raise InputError("--report is for one file; for a folder use --log (one line a file)")
        if single:
            check_output_path(output, inputs[0])
            if output.exists() and not overwrite:
                raise InputError(
                    f"{output}: exists; pass --overwrite to replace it (a folder run skips "
                    "existing outputs the same way)"
                )
        if report is not None:
            check_writable_file(report, "--report")
        check_device(device)
        from threpair.generators import resolve

        resolve(generator)  # a typo fails here, before any work
        load_model = partial(
            load_face_model, model, device, hysteresis, temporal_smooth, precision,
            engine.value, generator, references, int(match_grid.value),
        )  # fmt: skip
        face_model = load_model()
        size = getattr(face_model, "resolution", None) or CropConfig().size
        cfg = PipelineConfig(
            detect=DetectConfig(
                backend=detector,  # type: ignore[arg-type]
                max_side=detect_max_side,
                every=detect_every,
                weights=str(detector_weights) if detector_weights else None,
            ),
            track=TrackConfig(smooth_window=smooth),
            crop=getattr(face_model, "crop", None) or CropConfig(size=size, margin=margin),
            paste=PasteConfig(
                region=region,
                color_match=color_match,
                mode=paste_mode,  # type: ignore[arg-type]
                seam=seam or ("off" if model == "passthrough" else "auto"),
                seam_method=seam_method,  # type: ignore[arg-type]
            ),  # fmt: skip
            encode=EncodeConfig(codec=codec.value, crf=crf, preset=preset.value),
            confidence=ConfidenceConfig(enabled=confidence_blend, min_strength=min_strength),
        )
        if not single:
            loaded = [face_model]  # the first worker reuses the model loaded above

            def model_factory():
                return loaded.pop() if loaded else load_model()

            restore_folder(
                inputs, output, model_factory, cfg, batch_size, overwrite, shard, jobs, log,
                quiet, json_out, html, report_settings(model, cfg),
            )  # fmt: skip
            return
        from threpair.restore import restore_video

        with progress_bars(not quiet and not json_out) as progress:
            summary = restore_video(
                inputs[0], output, face_model, cfg, batch_size=batch_size, progress=progress
            )
        if html is not None:
            from threpair.report_html import write_report

            settings = {**report_settings(model, cfg), "engine": engine_line(summary.engine)[2:]}
            write_report(summary, html, settings)
        if report is not None:
            try:
                report.write_text(json.dumps(asdict(summary), indent=1))
            except OSError as e:
                raise InputError(f"--report {report}: cannot write it ({e.strerror})") from None
    for w in summary.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if json_out:
        print(json.dumps({k: v for k, v in asdict(summary).items() if k != "per_frame"}))
    elif not quiet:
        out.print(
            f"[green]wrote[/] {summary.output}: {summary.frames} frames, face in "
            f"{summary.frames_with_face}, {summary.frames_per_second:.1f} frames/s"
            + engine_line(summary.engine),
            highlight=False,
        )


def engine_line(record: dict) -> str:
    """'; engine references at 448 px, generator 96 px (estimated), validated +5.1 dB'."""
    if not record:
        return ""
    how = "estimated" if record.get("generator") == "auto" else record.get("generator")
    line = (
        f"; engine {record['engine']} at {record['crop_size']} px, generator "
        f"{record['generator_res']} px ({how})"
    )
    gain = record.get("gains", {}).get(record["engine"])
    return line + (f", validated {gain['gain']:+.2f} dB" if gain else "")


def check_html_target(html: Path, single: bool) -> None:
    """--html: a .html file next to one output, a folder (existing or new) for a batch."""
    if single:
        if html.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"--html {html}: give a .html file name for one input")
        if not html.resolve().parent.is_dir():
            raise InputError(f"--html {html}: folder {html.resolve().parent} does not exist")
    elif html.exists() and not html.is_dir():
        raise InputError(f"--html {html}: for a folder run give a folder (one page per video)")


def report_settings(model: str, cfg: PipelineConfig) -> dict[str, str]:
    """What the HTML report shows as identity / engine / settings."""
    p = cfg.paste
    return {
        "identity / model": model,
        "crop": f"{cfg.crop.size} px, margin {cfg.crop.margin}",
        "paste": f"region {p.region}, mode {p.mode}, feather {p.feather}, colour match "
        f"{'on' if p.color_match else 'off'}",
        "seam": f"{p.seam} ({p.seam_method}, band {p.seam_band} face boxes)",
        "confidence blend": f"{'on' if cfg.confidence.enabled else 'off'}, min strength "
        f"{cfg.confidence.min_strength}",
        "detector": f"{cfg.detect.backend}, every {cfg.detect.every} frame(s), "
        f"max side {cfg.detect.max_side}",
        "encode": f"{cfg.encode.codec} crf {cfg.encode.crf} {cfg.encode.preset}",
    }


def restore_folder(
    inputs, output, model_factory, cfg, batch_size, overwrite, shard, jobs, log, quiet, json_out,
    html=None, settings=None,
) -> None:  # fmt: skip
    """The batch side of `restore`: plan, run, print a summary; exit 1 when a file failed.

    Called inside user_errors(): InputError -> exit 2, Ctrl-C/SIGTERM -> exit 130.
    `html`: a folder for one report page per restored video plus index.html.
    """
    import threading

    from threpair.batch import (
        BatchInterrupted,
        RestoreProcess,
        ensure_output_dir,
        interrupt_on_sigterm,
        parse_shard,
        plan_jobs,
        run_jobs,
    )

    if jobs < 1:
        raise InputError(f"--jobs {jobs}: use 1 or more")
    plan = plan_jobs(inputs, output, overwrite, parse_shard(shard) if shard else None)
    ensure_output_dir(output)
    if jobs > 1 and "torch" in sys.modules:  # N files at once: split the cores between them
        sys.modules["torch"].set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    stop = threading.Event()
    pages: list = []
    on_summary = None
    if html is not None:
        from threpair.report_html import write_report

        html.mkdir(parents=True, exist_ok=True)
        lock = threading.Lock()

        def on_summary(job, summary) -> None:
            page = html / (job.name.replace("/", "__").rsplit(".", 1)[0] + ".html")
            write_report(summary, page, settings)
            with lock:
                pages.append((page, summary))

    process = RestoreProcess(model_factory, cfg, batch_size, stop=stop, on_summary=on_summary)
    show = not quiet and not json_out
    todo = sum(j.status == "todo" for j in plan)
    if show:
        out.print(
            f"{len(plan)} video(s){f' in shard {shard}' if shard else ''}: {todo} to restore, "
            f"{len(plan) - todo} already done",
            highlight=False,
        )

    with progress_bars(show) as progress:
        finished = 0

        def on_event(event: dict) -> None:
            nonlocal finished
            if event["event"] != "end":
                return
            if event["status"] in ("done", "failed", "interrupted"):
                finished += 1
                if progress is not None:
                    progress("files", finished, todo)
            if event["status"] == "failed" and not quiet:
                err.print(f"[bold red]failed:[/] {escape(event['reason'])}", highlight=False)
            for w in event.get("warnings", []) if not quiet else []:
                err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)

        try:
            with interrupt_on_sigterm():
                result = run_jobs(plan, process, log, jobs, on_event, stop)
        except BatchInterrupted as e:
            if show:
                out.print(f"[yellow]stopped[/]: {e.result.summary()}", highlight=False)
            raise
    if html is not None and pages:
        from threpair.report_html import write_index

        index = write_index(sorted(pages, key=lambda p: str(p[0])), html / "index.html")
        if show:
            out.print(f"[green]report[/] {index}", highlight=False)
    if json_out:
        print(json.dumps({**result.counts, "frames": result.frames, "seconds": result.seconds,
                          "failures": [r.record() for r in result.failures]}))  # fmt: skip
    elif show:
        if result.failures:
            table = Table(title="failed", show_header=True)
            table.add_column("file")
            table.add_column("reason")
            for r in result.failures:
                table.add_row(r.job.name, r.reason)
            err.print(table)
        color = "red" if result.failed else "green"
        out.print(f"[{color}]{result.summary()}[/]", highlight=False)
    if result.failed:
        raise typer.Exit(1)


@app.command("train-identity")
def train_identity(
    videos: Annotated[
        list[Path], typer.Argument(help="Real footage of one person: files and/or folders.")
    ],
    minutes: Annotated[
        float | None,
        typer.Option(
            help="Also train the SOVQAE network for this long (0 = bank only) "
            "[default: bank only on a CPU, until --steps on a GPU]."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Network training: stop after this many steps.")
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="Network preset: tiny (tests), small (256 px, CPU-trainable), base (256 px, "
            "GPU), hd (512 px, GPU); auto = base on a GPU, small on a CPU."
        ),
    ] = "auto",
    output: Annotated[
        str,
        typer.Option(
            help="Network output: band (keep the generated low band, add the high band) or "
            "full (the paper's full re-generation)."
        ),
    ] = "band",
    generator: Annotated[
        str,
        typer.Option(
            help="The lip-sync generator the network is for (its face resolution sets the "
            "training degradation and the band split): wav2lip, musetalk, ... or PIXELS."
        ),
    ] = "wav2lip",
    patch_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Network training on random patches of this size (0 = whole crops) "
            "[default: half the crop at 256 px and more].",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="DataLoader processes that make training batches.")
    ] = 0,
    compile_net: Annotated[
        bool, typer.Option("--compile", help="torch.compile the training forward (GPU).")
    ] = False,
    patience: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop network training after this many validations without "
            "improvement (0 = never).",
        ),
    ] = 0,
    bank_size: Annotated[int, typer.Option(help="Reference crops kept in the bank.")] = 64,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Identity file (.safetensors).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted network training.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per step (per GPU).")] = 8,
    val_fraction: Annotated[
        float, typer.Option(help="Last part of each video held out for validation.")
    ] = 0.1,
    clean_only: Annotated[
        bool, typer.Option(help="Train the paper's way: clean crops in (no degradations).")
    ] = False,
    margin: Annotated[
        float, typer.Option(min=1.0, max=4.0, help="Crop side as a multiple of the face box.")
    ] = 1.5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build an identity from real footage of one person: a reference bank (seconds, no
    training) and, on request or on a GPU, a trained SOVQAE network; every engine's gain is
    validated on the footage's held-out last part.

    Example: threpair train-identity alice_real.mp4   (-> checkpoints/alice_real.safetensors)
    """
    import torch

    from threpair.batch import find_videos
    from threpair.engines import validate_identity
    from threpair.identity import build_identity, summary

    with user_errors():
        if not 0 < val_fraction < 1:
            raise InputError("--val-fraction must be between 0 and 1")
        if minutes is not None and minutes < 0:
            raise InputError(f"--minutes {minutes}: give 0 (bank only) or more minutes")
        check_device(device)
        files = find_videos(videos)
        target = out_path or Path("checkpoints") / f"{files[0].stem}.safetensors"
        if target.suffix != ".safetensors":
            raise InputError(f"--out {target}: use a .safetensors file name")
        check_writable_file(target, "--out", create_folders=True)
        if preset != "auto":
            from threpair.model import get_preset

            get_preset(preset)  # an unknown name fails here, before any work
        if output not in ("band", "full"):
            raise InputError(f"--output {output}: use band or full")
        from threpair.generators import resolve

        gen_res = resolve(generator)
        if gen_res is None:
            raise InputError("--generator auto: training needs a named generator or PIXELS")
        cuda = torch.cuda.is_available() and device != "cpu"
        train_net = (minutes is not None and minutes > 0) or (
            minutes is None and (steps is not None or cuda)
        )
        show = not quiet and not json_out
        cfg = PipelineConfig(crop=CropConfig(margin=margin))
        with progress_bars(show) as progress:
            ident = build_identity(files, cfg, bank_size, val_fraction, progress=progress)
        bank = ident.info["bank"]
        if show:
            out.print(
                f"reference bank: {bank['size']} crops at {bank['resolution']} px from "
                f"{len(files)} video(s); {len(ident.holdout)} held-out crops",
                highlight=False,
            )
        if train_net:
            options = NetworkOptions(preset, steps, minutes, resume, device, batch_size,
                                     val_fraction, clean_only, margin, output, gen_res,
                                     patch_size, workers, compile_net, patience)  # fmt: skip
            train_network(ident, files, target, options, show)
        elif show and not cuda:
            out.print("no GPU: built the reference bank only (--minutes N also trains the network)")
        # validate on the GPU when there is one (the reference engine at 512 px is slow on a CPU)
        records = validate_identity(ident, ("cuda" if cuda else "cpu") if device == "auto"
                                    else device)  # fmt: skip
        for name, record in records.items():
            if show:
                out.print(
                    f"validated {name}: face {record['degraded']:.2f} -> {record['repaired']:.2f}"
                    f" dB ({record['gain']:+.2f}), mouth {record['mouth_gain']:+.2f} dB on held-out"
                    f" crops at a 96-px generator",
                    highlight=False,
                )
        ident.save(target)
    if json_out:
        print(json.dumps({"identity": str(target), **summary(ident)}, default=str))
    elif not quiet:
        out.print(f"[green]wrote[/] {target}", highlight=False)


@dataclass(frozen=True)
class NetworkOptions:
    """train-identity's options for the network (see its --help)."""

    preset: str
    steps: int | None
    minutes: float | None
    resume: bool
    device: str
    batch_size: int
    val_fraction: float
    clean_only: bool
    margin: float
    output: str
    gen_res: int
    patch_size: int | None
    workers: int
    compile: bool
    patience: int


def train_network(ident, files, target, o: NetworkOptions, show: bool) -> None:
    """The SOVQAE part of train-identity: train on the footage's crops, embed in `ident`."""
    import torch

    from threpair import __version__ as version
    from threpair.data import training_crops
    from threpair.generators import low_grid
    from threpair.identity import attach_network, network_work_path
    from threpair.model import get_preset
    from threpair.train import TrainConfig, default_gen_res, default_patch, state_path, train

    preset = o.preset
    if preset == "auto":
        preset = "base" if torch.cuda.is_available() and o.device != "cpu" else "small"
    base_cfg = get_preset(preset)
    # the generator at the real scale; test crops (tiny) scale it down with them
    gen_res = o.gen_res if base_cfg.resolution >= 256 else default_gen_res(base_cfg.resolution)
    grid = min(base_cfg.resolution, low_grid(gen_res, o.margin))
    model_cfg = replace(base_cfg, output=o.output, band_grid=grid)
    crop = CropConfig(size=model_cfg.resolution, margin=o.margin)
    cfg = PipelineConfig(crop=crop)
    steps, minutes, device, batch_size = o.steps, o.minutes, o.device, o.batch_size
    resume, val_fraction = o.resume, o.val_fraction
    n_steps = steps if steps is not None else 100_000 if minutes else 3000
    patch = default_patch(model_cfg.resolution) if o.patch_size is None else o.patch_size
    train_cfg = TrainConfig(
        steps=n_steps, minutes=minutes, batch_size=batch_size, device=device,
        degrade_inputs=not o.clean_only, gen_res=gen_res, margin=o.margin, patch_size=patch,
        workers=o.workers, compile=o.compile, patience=o.patience,
    )  # fmt: skip
    with progress_bars(show) as progress:
        train_crops, val_crops, sources = training_crops(files, cfg, val_fraction, progress)
    if show:
        out.print(
            f"network: {len(train_crops)} training and {len(val_crops)} validation crops; "
            f"preset {preset} ({model_cfg.resolution} px, output {model_cfg.output}, "
            f"{'patches of ' + str(patch) + ' px' if patch else 'whole crops'}, generator "
            f"{gen_res} px)",
            highlight=False,
        )
    metadata = {"threpair_version": version, "preset": preset, "crop": crop.to_dict(),
                "detect": asdict(cfg.detect), "sources": sources}  # fmt: skip
    work = network_work_path(target)
    if resume and not state_path(work).is_file():
        err.print(
            f"[yellow]warning:[/] --resume: no saved state {state_path(work)} (nothing to "
            "resume); training starts from scratch",
            highlight=False,
        )
    with progress_bars(show) as progress:
        result = train(
            train_crops, val_crops, model_cfg, train_cfg, work, metadata, resume=resume,
            on_progress=training_reporter(progress, n_steps, show, minutes),
        )  # fmt: skip
    attach_network(ident, result.checkpoint)
    work.unlink(missing_ok=True)
    if show:
        val = result.val
        if result.stopped_by == "plateau":
            out.print(f"network: validation stopped improving ({o.patience} validations "
                      "without gain): stopped early")  # fmt: skip
        out.print(
            f"network: {result.steps} steps ({result.seconds / 60:.1f} min), its own validation "
            f"PSNR degraded {val.get('psnr_degraded', float('nan')):.2f} dB -> repaired "
            f"{val.get('psnr_repair', float('nan')):.2f} dB",
            highlight=False,
        )


def training_reporter(progress, total_steps: int, show: bool, minutes: float | None = None):
    """Map train()'s events onto the progress bar and a few printed lines.

    With a time budget (`minutes`) the bar shows training time out of the budget, unless the
    step cap ends the run sooner; else steps out of `total_steps`.
    """

    by_time: list[bool] = []  # decided at the first log event, then kept

    def report(event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and show:
            out.print(f"losses: {', '.join(event['losses'])}; device {event['device']}")
            if event.get("resumed_from"):
                out.print(f"resuming from step {event['resumed_from']}")
        elif kind == "log" and progress is not None:
            step, elapsed = int(event["step"]), float(event.get("elapsed", 0.0))
            if not by_time:  # will the time budget end the run before the step cap?
                rate = step / max(elapsed, 1e-9)
                by_time.append(minutes is not None and rate * minutes * 60 < total_steps)
            if by_time[0]:
                progress("train", min(elapsed, minutes * 60), minutes * 60, "s")  # type: ignore[operator]
            else:
                progress("train", step, total_steps)
        elif kind == "plateau" and show:
            out.print(f"step {int(event['step'])}: validation plateaued (best "
                      f"{event['best']:.2f} dB); stopping")  # fmt: skip
        elif kind == "val" and show:
            out.print(
                f"step {int(event['step'])}: val PSNR degraded {event['psnr_degraded']:.2f} -> "
                f"repaired {event['psnr_repair']:.2f} dB (clean recon {event['psnr_recon']:.2f})"
                + (
                    f", codes used {event['usage_fraction']:.0%}"
                    if "usage_fraction" in event
                    else ""
                ),
                highlight=False,
            )

    return report


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="An identity file (.safetensors).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Show what an identity holds: reference bank, held-out crops, network, validated gains.

    Example: threpair inspect checkpoints/alice.safetensors
    """
    from threpair.checkpoint import FORMAT_TAG, read_metadata
    from threpair.identity import Identity, summary

    with user_errors():
        legacy = _safetensors_tag(model) == FORMAT_TAG
        meta = read_metadata(model) if legacy else summary(Identity.load(model))
    if json_out:
        print(json.dumps({"format": "network-only (0.1)" if legacy else "identity", **meta},
                         indent=2, default=str))  # fmt: skip
        return
    table = Table(title=str(model), show_header=False)
    if legacy:
        table.add_row("format", "network-only checkpoint of threpair 0.1: restore refuses it; "
                      "rebuild with `threpair train-identity VIDEO`")  # fmt: skip
        table.add_row("model", str(meta.get("model_config")))
        for section in ("val", "theory"):
            for k, v in meta["metadata"].get("training", {}).get(section, {}).items():
                table.add_row(f"{section}.{k}", f"{v:.4g}" if isinstance(v, float) else str(v))
        out.print(table)
        return
    bank = meta["bank"]
    cov = bank.get("coverage", {})
    table.add_row("reference bank", f"{bank['size']} crops at {bank['resolution']} px "
                  f"(face crop {bank.get('native_side_px', 0):.0f} px in the footage)")  # fmt: skip
    table.add_row("poses covered", f"roll {bank.get('roll_deg')} deg; nearest bank crop at "
                  f"{cov.get('nearest_median', float('nan')):.2f} (median) / "
                  f"{cov.get('nearest_p95', float('nan')):.2f} (95%) "
                  "of a typical frame distance")  # fmt: skip
    table.add_row("held out", f"{meta['holdout']['shape'][0]} crops (validation)")
    for src in meta["sources"]:
        table.add_row("source", f"{src['path']} ({src['frames']} frames, "
                      f"sha256 {src['sha256'][:12]})")  # fmt: skip
    net = meta["network"]
    table.add_row("network", "none (train-identity --minutes N trains one)" if net is None else
                  f"{net['preset']} at {net['resolution']} px, {net['parameters']:,} parameters, "
                  f"{net['training'].get('steps')} steps, output {net.get('output')}"
                  + (f" (low band kept on {net.get('band_grid')} cells)"
                     if net.get("output") == "band" else ""))  # fmt: skip
    if net is not None:
        for k, v in (net["training"].get("theory") or {}).items():
            table.add_row(f"theory.{k}", f"{v:.4g}" if isinstance(v, float) else str(v))
    for engine, by_res in meta["gains"].items():
        for res, g in by_res.items():
            table.add_row(f"gain {engine} @ {res} px", f"face {g['gain']:+.2f} dB, mouth "
                          f"{g['mouth_gain']:+.2f} dB ({g['crops']} held-out crops)")  # fmt: skip
    for key, figures in meta.get("reference_state", {}).items():  # what restores read
        tau, base = (figures.get(k) for k in ("tau", "outside_baseline"))
        tau_s = "none" if tau is None else f"{tau:.3g}"
        base_s = "not yet" if base is None else f"{base:.3f}"
        table.add_row("references measured", f"{key}: tau {tau_s}, confidence baseline {base_s}")
    out.print(table)


def _safetensors_tag(path: Path) -> str | None:
    """The 'format' tag in a safetensors header, None when unreadable (load says why)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # noqa: BLE001 - any unreadable file: the real loader reports it
        return None


@app.command()
def degrade(
    input: Annotated[Path, typer.Argument(help="Real footage.")],
    output: Annotated[Path, typer.Argument(help="Where to write the fake (generated-looking).")],
    gen_res: Annotated[
        int, typer.Option(min=4, max=1024, help="Generator face resolution (Wav2Lip: 96).")
    ] = 96,
    lower_half: Annotated[bool, typer.Option(help="Degrade only the lower half of the box.")] = (
        False
    ),
    blur: Annotated[
        float, typer.Option(min=0.0, max=100.0, help="Gaussian blur sigma at the generator scale.")
    ] = 0.0,
    jpeg: Annotated[int | None, typer.Option(help="JPEG quality of the render (1-100).")] = None,
    crf: Annotated[int, typer.Option(min=0, max=51, help="Output x264 quality.")] = 18,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Make real footage look like lip-sync output (Wav2Lip-style low-res face, hard seam).

    Example: threpair degrade alice_real.mp4 alice_fake.mp4 --gen-res 96
    """
    from threpair.evaluate import degrade_video

    with user_errors():
        if jpeg is not None and not 1 <= jpeg <= 100:
            raise InputError(f"--jpeg {jpeg}: use a quality between 1 and 100")
        cfg = PipelineConfig(encode=EncodeConfig(crf=crf))
        with progress_bars(not quiet and not json_out) as progress:
            result = degrade_video(input, output, gen_res, lower_half, blur, jpeg, cfg, progress)
    if json_out:
        print(json.dumps(result))
    elif not quiet:
        out.print(
            f"[green]wrote[/] {result['output']}: {result['frames']} frames, face degraded in "
            f"{result['frames_with_face']} at {gen_res} px",
            highlight=False,
        )


@app.command("eval")
def eval_cmd(
    restored: Annotated[Path, typer.Argument(help="Restored (or generated) video.")],
    reference: Annotated[Path, typer.Argument(help="The real video it should match.")],
    csv: Annotated[Path | None, typer.Option(help="Write per-frame metrics as CSV.")] = None,
    window: Annotated[
        int | None,
        typer.Option(min=1, help="Sliding-evaluation window (frames); default: shorter."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Face and mouth PSNR/SSIM, flicker (temporal error) and mouth sharpness vs a reference.

    Example: threpair eval alice_fixed.mp4 alice_real.mp4 --csv frames.csv

    Both videos must have the same size and frame rate. --json is strict JSON: a metric that
    could not be measured is null, an infinite PSNR (identical pixels) is the string "inf".
    Exit 1 when no frame could be scored (no face found in the reference).
    """
    from threpair.evaluate import evaluate_videos

    with user_errors():
        with progress_bars(not quiet and not json_out) as progress:
            result = evaluate_videos(restored, reference, window=window, progress=progress)
        if csv is not None:
            write_csv(csv, result.per_frame)
    scored = result.summary.get("frames_scored", 0)
    if json_out:
        print(json.dumps(json_safe({"summary": result.summary, "alignment": result.alignment,
                                    "offset": result.offset}), allow_nan=False))  # fmt: skip
    if not scored:
        err.print(
            f"[bold red]error:[/] nothing could be scored: no face found in {reference}",
            highlight=False,
        )
        raise typer.Exit(1)
    if json_out:
        return
    table = Table(title=f"{restored} vs {reference}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)
    out.print(f"alignment: {result.alignment}", highlight=False)


def json_safe(obj):
    """NaN -> None (not measurable), +/-inf -> "inf"/"-inf", recursively: strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_csv(path: Path, rows: list[dict]) -> None:
    """Per-frame rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    import csv as csvlib

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    try:
        with open(path, "w", newline="") as f:
            writer = csvlib.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as e:
        raise InputError(f"{path}: cannot write the CSV ({e.strerror})") from None


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo files.")] = Path(
        "threpair-demo"
    ),
    seconds: Annotated[float, typer.Option(help="Length of the example clip.")] = 12.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Build an identity from a built-in example and repair a Wav2Lip-like copy (offline).

    Example: threpair demo --out threpair-demo
    """
    from threpair.demo import run_demo

    with user_errors():
        with progress_bars(not quiet) as progress:
            if seconds < 2:
                raise InputError("--seconds: the example needs at least 2 seconds")
            result = run_demo(out_dir, seconds, progress=progress)
    gain = result.psnr_repaired - result.psnr_generated
    out.print(
        f"identity built in {result.build_seconds:.0f} s -> {result.identity}"
        f"{engine_line(result.engine)}\n"
        f"face PSNR vs the real frames: generated {result.psnr_generated:.2f} dB, repaired "
        f"{result.psnr_repaired:.2f} dB ({gain:+.2f} dB)\n"
        f"side by side: {result.side_by_side}\ncontact sheet: {result.contact_sheet}",
        highlight=False,
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
