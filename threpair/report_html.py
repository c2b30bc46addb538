"""An HTML page that shows one restore: the videos in sync, a wipe, the mouth, plots, summary.

    page = write_report(summary, "report.html", settings={"model": ..., ...})
    write_index([(page, summary), ...], "reports/index.html")       # a folder of videos

Fed only by what `restore_video` returns (RestoreSummary and its per-frame records) plus the
input and output files. The page needs no network: short re-encoded previews of the input
and the output (H.264, at most `preview_width` pixels wide, muted), embedded as data URLs
(`embed=True`, one file to mail around) or written next to the page in `<name>_files/`;
plots are inline SVG; the script is inline and plain (no libraries).

The flicker plot is the reference-free temporal error (metrics.TemporalError without a
reference: mean |frame t - frame t-1| over the face box), measured on the previews for the
input and the output: compare the two curves, not their level across clips.
"""

from __future__ import annotations

import base64
import html
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from threpair.config import EncodeConfig
from threpair.errors import InputError
from threpair.metrics import TemporalError
from threpair.video import VideoWriter, probe, read_frames

PREVIEW_ENCODE = EncodeConfig(crf=28, preset="veryfast")


def _even(v: float) -> int:
    return max(2, int(round(v / 2)) * 2)


def make_previews(
    summary: Any,
    folder: Path,
    preview_width: int = 640,
    max_seconds: float = 30.0,
) -> dict[str, Any]:
    """Write input.mp4 / output.mp4 previews into `folder` (first `max_seconds`), and measure
    the reference-free flicker of both inside the face box per frame. Returns paths, size,
    fps and the two flicker series (NaN where no face / first frame)."""
    a, b = probe(summary.input), probe(summary.output)
    scale = min(1.0, preview_width / a.width)
    w, h = _even(a.width * scale), _even(a.height * scale)
    fx, fy = w / a.width, h / a.height
    n = min(summary.frames, int(round(max_seconds * float(a.fps))))
    geo = {r["frame"]: r["geometry"] for r in summary.per_frame if "geometry" in r}
    flicker = {"input": [float("nan")] * n, "output": [float("nan")] * n}
    meters = {"input": TemporalError(), "output": TemporalError()}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"input": folder / "input.mp4", "output": folder / "output.mp4"}
    with (
        VideoWriter(paths["input"], w, h, a.fps, None, PREVIEW_ENCODE) as wi,
        VideoWriter(paths["output"], w, h, b.fps, None, PREVIEW_ENCODE) as wo,
    ):
        pairs = zip(read_frames(a, (w, h)), read_frames(b, (w, h)))
        for i, (fa, fb) in enumerate(pairs):
            if i >= n:
                break
            wi.write(fa)
            wo.write(fb)
            g = geo.get(i)
            if g is None:
                for m in meters.values():
                    m.skip()
                continue
            cx, cy, side = g[0] * fx, g[1] * fy, g[2] * fx
            x0, x1 = int(max(0, cx - side / 3)), int(min(w, cx + side / 3))
            y0, y1 = int(max(0, cy - side / 3)), int(min(h, cy + side / 3))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            for key, frame in (("input", fa), ("output", fb)):
                m = meters[key]
                before = m.count
                # one fixed box per transition: the face box of frame t on both frames
                region = np.zeros((h, w), bool)
                region[y0:y1, x0:x1] = True
                m.update(frame, mask=region)
                if m.count > before:
                    flicker[key][i] = float(m.values[-1])
    return {"paths": paths, "size": (w, h), "fps": a.fps, "frames": n, "flicker": flicker,
            "scale": (fx, fy)}  # fmt: skip


# ------------------------------------------------------------------------------ plots


def _polyline(xs: np.ndarray, ys: np.ndarray, x0: float, y0: float, pw: float, ph: float,
              n: int, lo: float, hi: float) -> list[str]:  # fmt: skip
    """SVG path 'd' strings for the finite runs of (xs, ys)."""
    out, cur = [], []
    for x, y in zip(xs, ys):
        if not np.isfinite(y):
            if len(cur) > 1:
                out.append(" ".join(cur))
            cur = []
            continue
        px = x0 + pw * x / max(1, n - 1)
        py = y0 + ph * (1 - (min(max(y, lo), hi) - lo) / max(hi - lo, 1e-9))
        cur.append(f"{'M' if not cur else 'L'}{px:.1f},{py:.1f}")
    if len(cur) > 1:
        out.append(" ".join(cur))
    return out


def svg_plot(
    title: str,
    n: int,
    series: list[tuple[str, list[float], str]],
    lo: float | None = None,
    hi: float | None = None,
    marks: list[int] | None = None,
    width: int = 900,
    height: int = 120,
    unit: str = "",
) -> str:
    """One inline SVG line plot over frames 0..n-1: series (label, values, colour); `marks`:
    frames shaded red (blended less). Carries a playhead line that the page's script moves."""
    pad_l, pad_r, pad_t, pad_b = 48, 10, 18, 18
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    vals = np.array([v for _, s, _ in series for v in s], np.float64)
    vals = vals[np.isfinite(vals)]
    lo = float(lo if lo is not None else (vals.min() if len(vals) else 0.0))
    hi = float(hi if hi is not None else (vals.max() if len(vals) else 1.0))
    if hi <= lo:
        hi = lo + 1.0
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-frames="{n}" data-x0="{pad_l}" data-pw="{pw}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for f in marks or []:
        x = pad_l + pw * f / max(1, n - 1)
        parts.append(f'<rect x="{x - 0.5:.1f}" y="{pad_t}" width="{max(1.0, pw / max(n, 1)):.1f}"'
                     f' height="{ph}" fill="#e33" opacity="0.25"/>')  # fmt: skip
    for label, s, colour in series:
        for d in _polyline(np.arange(len(s)), np.asarray(s, np.float64), pad_l, pad_t, pw, ph,
                           n, lo, hi):  # fmt: skip
            parts.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.3">'
                         f"<title>{html.escape(label)}</title></path>")  # fmt: skip
    legend = " ".join(
        f'<tspan fill="{c}">&#9632; {html.escape(label)}</tspan>' for label, _, c in series
    )
    parts += [
        f'<text x="{pad_l}" y="12" font-size="12">{html.escape(title)}: {legend}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="10" text-anchor="end">'
        f"{hi:.3g}{unit}</text>",
        f'<text x="{pad_l - 4}" y="{pad_t + ph}" font-size="10" text-anchor="end">'
        f"{lo:.3g}{unit}</text>",
        f'<text x="{pad_l}" y="{height - 4}" font-size="10">frame 0</text>',
        f'<text x="{pad_l + pw}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"frame {n - 1}</text>",
        f'<line class="playhead" x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{pad_t + ph}" '
        'stroke="#000" stroke-width="1"/>',
        "</svg>",
    ]
    return "\n".join(parts)


def plots(summary: Any, flicker: dict[str, list[float]] | None) -> str:
    """The four plots of a page: detection, confidence, paste strength, flicker."""
    recs = sorted(summary.per_frame, key=lambda r: r["frame"])
    n = len(recs)
    less = [r["frame"] for r in recs if r.get("strength", 1.0) < 1.0]
    det = [1.0 if r.get("detected") else (0.5 if r.get("face") else 0.0) for r in recs]
    out = [svg_plot("face: 1 detected, 0.5 bridged (gap filled), 0 none", n,
                    [("detection", det, "#2a6")], 0, 1)]  # fmt: skip
    if any("outside" in r for r in recs):
        conf = [1 - r["outside"] if "outside" in r else float("nan") for r in recs]
        out.append(svg_plot("confidence (1 - share of latents outside delta_min/2)", n,
                            [("confidence", conf, "#36c")], 0, 1, less))  # fmt: skip
    else:
        out.append(svg_plot("confidence: this engine reports none", n, [], 0, 1))
    strength = [r.get("strength", float("nan")) if r.get("face") else float("nan") for r in recs]
    out.append(svg_plot("paste strength (red: frames blended less)", n,
                        [("strength", strength, "#c60")], 0, 1.05, less))  # fmt: skip
    if flicker:
        m = len(flicker["input"])
        out.append(svg_plot(
            f"flicker in the face box, reference-free (mean |frame t - frame t-1|, preview, "
            f"first {m} frames)", m,
            [("input", flicker["input"], "#888"), ("output", flicker["output"], "#c0c")],
            0, None, [f for f in less if f < m], unit="",
        ))  # fmt: skip
    return "\n".join(out)


# ------------------------------------------------------------------------------ page

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;max-width:1320px;color:#222}
h1{font-size:18px;margin:0 0 8px} h2{font-size:15px;margin:18px 0 6px}
.videos{display:flex;gap:8px;position:relative}
.videos figure{margin:0;flex:1} figcaption{font-size:12px;color:#555}
.videos video{width:100%;display:block;background:#000}
.videos.wipe{display:block} .videos.wipe figure{position:absolute;top:0;left:0;width:100%}
.videos.wipe figure:first-child{position:relative}
.videos.wipe figcaption{display:none}
.controls{margin:8px 0;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
.zoom{display:flex;gap:8px} .zoom canvas{width:256px;height:256px;background:#000}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top} .warn{color:#a40}
svg.plot{display:block;max-width:100%;height:auto;margin:4px 0}
"""

JS = r"""
(function(){
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const vin = document.getElementById('v-in'), vout = document.getElementById('v-out');
  const box = document.getElementById('videos'), wipe = document.getElementById('wipe');
  const pos = document.getElementById('wipe-pos'), play = document.getElementById('play');
  const fps = data.fps, geo = data.mouth;
  // keep the input locked to the output (the output is the master clock)
  function sync(){ if (Math.abs(vin.currentTime - vout.currentTime) > 0.04)
                     vin.currentTime = vout.currentTime; }
  vout.addEventListener('seeked', sync);
  vout.addEventListener('play', () => { sync(); vin.play().catch(()=>{}); });
  vout.addEventListener('pause', () => { vin.pause(); sync(); });
  vout.addEventListener('ratechange', () => { vin.playbackRate = vout.playbackRate; });
  play.addEventListener('click', () => { vout.paused ? vout.play() : vout.pause(); });
  function setWipe(){ const p = pos.value;
    vout.parentElement.style.clipPath = box.classList.contains('wipe') ?
      'inset(0 0 0 ' + p + '%)' : 'none'; }
  wipe.addEventListener('change', () => { box.classList.toggle('wipe', wipe.checked); setWipe(); });
  pos.addEventListener('input', setWipe);
  const zin = document.getElementById('z-in').getContext('2d');
  const zout = document.getElementById('z-out').getContext('2d');
  const heads = document.querySelectorAll('svg.plot line.playhead');
  function tick(){
    const t = vout.currentTime, f = Math.min(data.frames - 1, Math.floor(t * fps + 1e-3));
    if (!vout.paused && Math.abs(vin.currentTime - t) > 0.12) vin.currentTime = t;
    const m = geo[f];
    for (const [ctx, v] of [[zin, vin], [zout, vout]]) {
      if (m && v.readyState >= 2) ctx.drawImage(v, m[0], m[1], m[2], m[2], 0, 0, 256, 256);
      else { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, 256, 256); }
    }
    heads.forEach(l => { const s = l.ownerSVGElement, n = +s.dataset.frames;
      const x = +s.dataset.x0 + +s.dataset.pw * Math.min(f, n - 1) / Math.max(1, n - 1);
      l.setAttribute('x1', x); l.setAttribute('x2', x); });
    document.getElementById('frame-no').textContent = 'frame ' + f;
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
  window.threpairReport = {vin: vin, vout: vout};
})();
"""


def _src(path: Path, page: Path, embed: bool) -> str:
    if embed:
        return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    return os.path.relpath(path, page.parent).replace(os.sep, "/")


def _mouth_boxes(summary: Any, scale: tuple[float, float], n: int) -> list[list[float] | None]:
    """Per preview frame, the square (x, y, side) in preview pixels around the mouth."""
    geo = {r["frame"]: r["geometry"] for r in summary.per_frame if "geometry" in r}
    out: list[list[float] | None] = []
    for i in range(n):
        g = geo.get(i)
        if g is None:
            out.append(None)
            continue
        cx, cy, side, angle = g
        # the mouth sits about 0.24 face boxes below the box centre (geometry.region_mask)
        bs = side / 1.5
        d = 0.26 * bs
        mx, my = cx - np.sin(angle) * d, cy + np.cos(angle) * d
        z = 0.55 * bs
        out.append([round((mx - z / 2) * scale[0], 1), round((my - z / 2) * scale[1], 1),
                    round(z * scale[0], 1)])  # fmt: skip
    return out


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    ) + "</table>"  # fmt: skip


def write_report(
    summary: Any,
    page: str | os.PathLike,
    settings: dict[str, Any] | None = None,
    embed: bool = True,
    preview_width: int = 640,
    max_seconds: float = 30.0,
) -> Path:
    """Write the HTML report of one restore to `page` and return its path.

    `summary`: the RestoreSummary restore_video returned (its input and output must exist).
    `settings`: what the caller wants shown as identity / engine / settings (model path,
    region, paste mode, ...). `embed`: previews inside the page (one file) or next to it in
    `<page stem>_files/`. Previews cover the first `max_seconds`; the plots of detection,
    confidence and strength cover the whole video.
    """
    page = Path(page)
    if page.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--html {page}: give a .html file name")
    if not page.parent.is_dir():
        raise InputError(f"--html {page}: folder {page.parent} does not exist")
    folder = page.with_name(page.stem + "_files")
    prev = make_previews(summary, folder, preview_width, max_seconds)
    if embed:
        srcs = {k: _src(p, page, True) for k, p in prev["paths"].items()}
        for p in prev["paths"].values():
            p.unlink()
        try:
            folder.rmdir()
        except OSError:
            pass
    else:
        srcs = {k: _src(p, page, False) for k, p in prev["paths"].items()}
    fps = Fraction(prev["fps"])
    data = {
        "fps": float(fps),
        "frames": prev["frames"],
        "mouth": _mouth_boxes(summary, prev["scale"], prev["frames"]),
    }
    sec = summary.seconds
    stage_rows = [(k, f"{v:.2f} s") for k, v in sec.items()]
    seam = summary.seam or {}
    if not seam:
        seam_text = "off"
    elif seam.get("found"):
        seam_text = (f"found: edges {', '.join(seam['edges'])} at "
                     f"{seam['box']} face boxes; blended")  # fmt: skip
    else:
        seam_text = "none found (nothing blended)"
    conf = summary.confidence or {}
    overview = [
        ("input", summary.input),
        ("output", summary.output),
        (
            "video",
            f"{summary.width}x{summary.height}, {summary.fps} fps, {summary.frames} frames",
        ),  # fmt: skip
        (
            "face",
            f"in {summary.frames_with_face} frames; detection rate {summary.detection_rate:.1%}",
        ),  # fmt: skip
        ("generator box seam", seam_text),
        ("speed", f"{summary.frames_per_second:.1f} frames/s"),
    ]
    overview += [(k, v) for k, v in (settings or {}).items()]
    if conf:
        overview.append(("confidence", ", ".join(f"{k} {v:.3g}" for k, v in conf.items())))
    fl = prev["flicker"]
    fin = np.nanmean(fl["input"]) if np.isfinite(fl["input"]).any() else float("nan")
    fout = np.nanmean(fl["output"]) if np.isfinite(fl["output"]).any() else float("nan")
    overview.append(("flicker (face box, reference-free)", f"input {fin:.3f}, output {fout:.3f}"))
    warnings = "".join(f'<li class="warn">{html.escape(w)}</li>' for w in summary.warnings)
    name = html.escape(Path(summary.input).name)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>threpair report: {name}</title>
<style>{CSS}</style></head>
<body>
<h1>threpair restore: {name}</h1>
<div class="controls">
 <button id="play" type="button">play / pause</button>
 <label><input id="wipe" type="checkbox"> wipe (input left of the line, output right)</label>
 <input id="wipe-pos" type="range" min="0" max="100" value="50" aria-label="wipe position">
 <span id="frame-no">frame 0</span>
</div>
<div class="videos" id="videos">
 <figure><video id="v-in" src="{srcs["input"]}" muted playsinline preload="auto"></video>
  <figcaption>input (generated)</figcaption></figure>
 <figure><video id="v-out" src="{srcs["output"]}" muted playsinline preload="auto" controls>
 </video><figcaption>output (restored)</figcaption></figure>
</div>
<h2>mouth, zoomed</h2>
<div class="zoom"><figure><canvas id="z-in" width="256" height="256"></canvas>
<figcaption>input</figcaption></figure><figure><canvas id="z-out" width="256" height="256">
</canvas><figcaption>output</figcaption></figure></div>
<h2>over time</h2>
{plots(summary, fl)}
<h2>summary</h2>
{_table(overview)}
<h2>time per stage</h2>
{_table(stage_rows)}
<h2>warnings</h2>
<ul>{warnings or "<li>none</li>"}</ul>
<script type="application/json" id="report-data">{json.dumps(data)}</script>
<script>{JS}</script>
</body></html>
"""
    page.write_text(body)
    return page


def write_index(pages: list[tuple[Path, Any]], index: str | os.PathLike) -> Path:
    """An index page linking the report of every video of a folder run: (page, summary)."""
    index = Path(index)
    rows = []
    for page, s in pages:
        rel = os.path.relpath(page, index.parent).replace(os.sep, "/")
        seam = s.seam or {}
        rows.append(
            f'<tr><td><a href="{html.escape(rel)}">{html.escape(Path(s.input).name)}</a></td>'
            f"<td>{s.frames}</td><td>{s.frames_with_face}</td><td>{s.detection_rate:.1%}</td>"
            f"<td>{'found' if seam.get('found') else ('off' if not seam else 'none')}</td>"
            f"<td>{s.confidence.get('blended_less', '-') if s.confidence else '-'}</td>"
            f"<td>{len(s.warnings)}</td><td>{s.seconds.get('total', 0):.1f} s</td></tr>"
        )
    index.write_text(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>threpair reports</title><style>{CSS}</style></head><body>
<h1>threpair restore: {len(pages)} video(s)</h1>
<table><tr><th>video</th><th>frames</th><th>with face</th><th>detection</th><th>box seam</th>
<th>blended less</th><th>warnings</th><th>time</th></tr>{"".join(rows)}</table>
</body></html>
"""
    )
    return index
