"""The `threpair` command line: one command per verb; parses, calls the library, prints.

Library code raises ThrepairError subclasses; here they become one red line on stderr and a
non-zero exit code (2 for bad input, 1 for other failures, 130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

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
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    except ThrepairError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: no partial output was left behind "
            "(an interrupted train-identity continues with --resume)"
        )
        raise typer.Exit(130) from None


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
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total or None)
        bars.update(tasks[stage], completed=done, total=max(total, done) or None)

    try:
        yield update
    finally:
        if tasks:
            bars.stop()


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
    spec: str, device: str, hysteresis: float = 0.0, smooth: float = 0.0, precision: str = "auto"
):
    """`passthrough` or a checkpoint path -> a FaceModel (with temporal smoothing if > 0)."""
    from threpair.restore import Passthrough

    if not 0 <= smooth < 1:
        raise InputError(f"--temporal-smooth {smooth}: use a value in [0, 1)")
    if spec == "passthrough":
        return Passthrough()
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{spec}: model not found (give a .safetensors file or 'passthrough')")
    from threpair.inference import IdentityModel, resolve_device, resolve_precision
    from threpair.smoothing import SmoothedCorrection

    try:  # checked before loading, so only this setting's errors become this message
        resolve_precision(precision, resolve_device(device))
    except ValueError as e:  # an unknown name, or fp16 without CUDA
        raise InputError(f"--precision {precision}: {e}") from None
    model = IdentityModel.load(path, device=device, hysteresis=hysteresis, precision=precision)
    return SmoothedCorrection(model, smooth) if smooth > 0 else model


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
        str, typer.Option("--model", "-m", help="Identity checkpoint, or 'passthrough'.")
    ] = "passthrough",
    region: Annotated[
        str, typer.Option(help="Part of the face to repair: face, lower or mouth.")
    ] = "face",
    detector: Annotated[str, typer.Option(help="Face detector: retinaface or s3fd.")] = (
        "retinaface"
    ),
    detector_weights: Annotated[
        Path | None, typer.Option(help="S3FD weights file (s3fd only).")
    ] = None,
    detect_every: Annotated[int, typer.Option(help="Detect on every k-th frame.")] = 1,
    detect_max_side: Annotated[
        int, typer.Option(help="Downscale frames to this longer side for detection.")
    ] = 640,
    smooth: Annotated[int, typer.Option(help="Geometry smoothing window (frames each side).")] = 4,
    margin: Annotated[float, typer.Option(help="Crop side as a multiple of the face box.")] = 1.5,
    paste_mode: Annotated[
        str, typer.Option(help="residual (add the model's change) or replace (paste its output).")
    ] = "residual",
    color_match: Annotated[bool, typer.Option(help="Match the crop's colours to the frame.")] = (
        False
    ),
    crf: Annotated[int, typer.Option(help="x264/x265 quality (lower = better).")] = 18,
    preset: Annotated[str, typer.Option(help="x264/x265 speed preset.")] = "medium",
    codec: Annotated[str, typer.Option(help="Video encoder.")] = "libx264",
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
            help="Keep last frame's code unless the new one is nearer by this x delta_min."
        ),
    ] = 0.0,
    temporal_smooth: Annotated[
        float,
        typer.Option(help="Share of the previous frame's correction kept (0 = off): less flicker."),
    ] = 0.5,  # = smoothing.DEFAULT_WEIGHT, written out so `--help` does not import torch
    confidence_blend: Annotated[
        bool, typer.Option(help="Paste low-confidence frames at reduced strength.")
    ] = True,
    min_strength: Annotated[
        float, typer.Option(help="Paste strength for frames far outside the confident range.")
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
        str, typer.Option(help="Generator box seam: auto (find it and blend across) or off.")
    ] = "auto",
    seam_method: Annotated[
        str,
        typer.Option(help="Seam blend: both (gradient + ramp), gradient, ramp or feather."),
    ] = "both",
    overwrite: Annotated[
        bool, typer.Option(help="Folder output: redo files whose output already exists.")
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
    """
    from threpair.batch import is_single_file

    with user_errors():
        if len(paths) < 2:
            raise InputError("give the input(s) and then the output: threpair restore IN... OUT")
        *inputs, output = paths
        if region not in ("face", "lower", "mouth"):
            raise InputError(f"--region {region}: use face, lower or mouth")
        if paste_mode not in ("replace", "residual"):
            raise InputError(f"--paste-mode {paste_mode}: use replace or residual")
        if detector not in ("retinaface", "s3fd"):
            raise InputError(f"--detector {detector}: use retinaface or s3fd")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size {batch_size}: give at least 1")
        if seam not in ("auto", "off"):
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
        face_model = load_face_model(model, device, hysteresis, temporal_smooth, precision)
        size = face_model.resolution or CropConfig().size
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
                seam=seam,
                seam_method=seam_method,  # type: ignore[arg-type]
            ),  # fmt: skip
            encode=EncodeConfig(codec=codec, crf=crf, preset=preset),
            confidence=ConfidenceConfig(enabled=confidence_blend, min_strength=min_strength),
        )
        if not single:
            loaded = [face_model]  # the first worker reuses the model loaded above

            def model_factory():
                return (
                    loaded.pop()
                    if loaded
                    else load_face_model(model, device, hysteresis, temporal_smooth, precision)
                )

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

            write_report(summary, html, report_settings(model, cfg))
    if report is not None:
        report.write_text(json.dumps(asdict(summary), indent=1))
    for w in summary.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if json_out:
        print(json.dumps({k: v for k, v in asdict(summary).items() if k != "per_frame"}))
    elif not quiet:
        out.print(
            f"[green]wrote[/] {summary.output}: {summary.frames} frames, face in "
            f"{summary.frames_with_face}, {summary.frames_per_second:.1f} frames/s",
            highlight=False,
        )


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
                err.print(f"[bold red]failed:[/] {event['reason']}", highlight=False)
            for w in event.get("warnings", []) if not quiet else []:
                err.print(f"[yellow]warning:[/] {w}", highlight=False)

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
    preset: Annotated[
        str,
        typer.Option(
            help="Model preset: tiny, cpu64, cpu128, base, hd; auto = base on GPU, cpu64 on CPU."
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(help="Stop after this many steps.")] = 3000,
    minutes: Annotated[
        float | None, typer.Option(help="Stop after this many minutes (whichever first).")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint path (.safetensors).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of --out.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Crops per step (per GPU).")] = 8,
    val_fraction: Annotated[
        float, typer.Option(help="Last part of each video kept for validation.")
    ] = 0.1,
    clean_only: Annotated[
        bool, typer.Option(help="Train the paper's way: clean crops in (no degradations).")
    ] = False,
    margin: Annotated[float, typer.Option(help="Crop side as a multiple of the face box.")] = 1.5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train an identity model on real footage of one person.

    Example: threpair train-identity alice_real.mp4 --minutes 30
    (writes checkpoints/alice_real.safetensors)
    """
    import torch

    from threpair import __version__ as version
    from threpair.batch import find_videos
    from threpair.data import training_crops
    from threpair.model import get_preset
    from threpair.train import TrainConfig, train

    with user_errors():
        if not 0 < val_fraction < 1:
            raise InputError("--val-fraction must be between 0 and 1")
        files = find_videos(videos)
        if preset == "auto":
            cuda = torch.cuda.is_available() and device != "cpu"
            preset = "base" if cuda else "cpu64"
        model_cfg = get_preset(preset)
        target = out_path or Path("checkpoints") / f"{files[0].stem}.safetensors"
        if target.suffix != ".safetensors":
            raise InputError(f"--out {target}: use a .safetensors file name")
        crop = CropConfig(size=model_cfg.resolution, margin=margin)
        cfg = PipelineConfig(crop=crop)
        train_cfg = TrainConfig(
            steps=steps, minutes=minutes, batch_size=batch_size, device=device,
            degrade_inputs=not clean_only,
        )  # fmt: skip
        show = not quiet and not json_out
        with progress_bars(show) as progress:
            train_crops, val_crops, sources = training_crops(files, cfg, val_fraction, progress)
        if show:
            out.print(
                f"{len(train_crops)} training and {len(val_crops)} validation crops from "
                f"{len(files)} video(s); preset {preset} ({model_cfg.resolution} px)",
                highlight=False,
            )
        metadata = {
            "threpair_version": version,
            "preset": preset,
            "crop": crop.to_dict(),
            "detect": asdict(cfg.detect),
            "sources": sources,
        }
        with progress_bars(show) as progress:
            result = train(
                train_crops, val_crops, model_cfg, train_cfg, target, metadata, resume=resume,
                on_progress=training_reporter(progress, steps, show),
            )  # fmt: skip
    if json_out:
        print(json.dumps({"checkpoint": str(result.checkpoint), "steps": result.steps,
                          "seconds": result.seconds, "val": result.val,
                          "theory": result.theory, "losses": result.losses}))  # fmt: skip
    elif not quiet:
        val = result.val
        out.print(
            f"[green]wrote[/] {result.checkpoint} after {result.steps} steps "
            f"({result.seconds / 60:.1f} min): validation PSNR degraded "
            f"{val.get('psnr_degraded', float('nan')):.2f} dB -> repaired "
            f"{val.get('psnr_repair', float('nan')):.2f} dB",
            highlight=False,
        )


def training_reporter(progress, total_steps: int, show: bool):
    """Map train()'s events onto the progress bar and a few printed lines."""

    def report(event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and show:
            out.print(f"losses: {', '.join(event['losses'])}; device {event['device']}")
            if event.get("resumed_from"):
                out.print(f"resuming from step {event['resumed_from']}")
        elif kind == "log" and progress is not None:
            progress("train", int(event["step"]), total_steps)
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
    model: Annotated[Path, typer.Argument(help="A .safetensors identity checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Show what a checkpoint holds: config, training summary, codebook and theory numbers.

    Example: threpair inspect checkpoints/alice.safetensors
    """
    from threpair.checkpoint import read_metadata

    with user_errors():
        meta = read_metadata(model)
    if json_out:
        print(json.dumps(meta, indent=2, default=str))
        return
    table = Table(title=str(model), show_header=False)
    training = meta["metadata"].get("training", {})
    flat = {
        "format version": meta.get("format_version"),
        "threpair version": meta.get("threpair_version"),
        "model": meta.get("model_config"),
        "parameters": f"{meta.get('num_parameters', 0):,}",
    }
    for k, v in flat.items():
        table.add_row(k, str(v))
    for k, v in meta.get("metadata", {}).items():
        if k != "training":
            table.add_row(k, json.dumps(v, default=str)[:200])
    for k in ("steps", "seconds", "stopped_by", "gen_res", "train_crops", "val_crops", "losses"):
        if k in training:
            table.add_row(f"training.{k}", str(training[k]))
    for section in ("val", "theory"):
        for k, v in training.get(section, {}).items():
            table.add_row(f"{section}.{k}", f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


@app.command()
def degrade(
    input: Annotated[Path, typer.Argument(help="Real footage.")],
    output: Annotated[Path, typer.Argument(help="Where to write the fake (generated-looking).")],
    gen_res: Annotated[int, typer.Option(help="Generator face resolution (Wav2Lip: 96).")] = 96,
    lower_half: Annotated[bool, typer.Option(help="Degrade only the lower half of the box.")] = (
        False
    ),
    blur: Annotated[float, typer.Option(help="Gaussian blur sigma at the generator scale.")] = 0.0,
    jpeg: Annotated[int | None, typer.Option(help="JPEG quality of the render (1-100).")] = None,
    crf: Annotated[int, typer.Option(help="Output x264 quality.")] = 18,
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
        int | None, typer.Option(help="Sliding-evaluation window (frames); default: shorter.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Face and mouth PSNR/SSIM, flicker (temporal error) and mouth sharpness vs a reference.

    Example: threpair eval alice_fixed.mp4 alice_real.mp4 --csv frames.csv
    """
    from threpair.evaluate import evaluate_videos

    with user_errors():
        with progress_bars(not quiet and not json_out) as progress:
            result = evaluate_videos(restored, reference, window=window, progress=progress)
        if csv is not None:
            write_csv(csv, result.per_frame)
    if json_out:
        print(json.dumps({"summary": result.summary, "alignment": result.alignment,
                          "offset": result.offset}))  # fmt: skip
        return
    table = Table(title=f"{restored} vs {reference}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)
    out.print(f"alignment: {result.alignment}", highlight=False)


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
    minutes: Annotated[float, typer.Option(help="Training time budget.")] = 3.0,
    steps: Annotated[int, typer.Option(help="Training step cap.")] = 100_000,
    preset: Annotated[str, typer.Option(help="Model preset (cpu64 suits a CPU).")] = "cpu64",
    seconds: Annotated[float, typer.Option(help="Length of the example clip.")] = 12.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Train on a built-in example and repair a lip-sync-degraded copy (offline, ~5 min CPU).

    Example: threpair demo --out threpair-demo
    """
    from threpair.demo import run_demo

    with user_errors():
        with progress_bars(not quiet) as progress:
            if seconds < 2:
                raise InputError("--seconds: the example needs at least 2 seconds")
            result = run_demo(
                out_dir, minutes, steps, preset, seconds, progress=progress,
                on_train=training_reporter(progress, steps, not quiet),
            )  # fmt: skip
    gain = result.psnr_repaired - result.psnr_generated
    out.print(
        f"trained {result.train_steps} steps in {result.train_minutes:.1f} min -> "
        f"{result.checkpoint}\n"
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
