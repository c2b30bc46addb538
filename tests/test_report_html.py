"""The HTML report of a restore: what the page holds, and that a real browser plays it."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.browser import Browser
from threpair.cli import app
from threpair.report_html import write_index, write_report
from threpair.restore import Passthrough, restore_video


@pytest.fixture(scope="module")
def restored(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "restored.mp4"
    return restore_video(clip, out, Passthrough())


def test_page_is_self_contained(restored, tmp_path):
    page = write_report(restored, tmp_path / "r.html", settings={"identity / model": "pass"})
    text = page.read_text()
    # no network: nothing is fetched from http(s), the previews are inside the page
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    srcs = re.findall(r'<video id="v-(in|out)" src="([^"]+)"', text)
    assert [k for k, _ in srcs] == ["in", "out"]
    assert all(s.startswith("data:video/mp4;base64,") for _, s in srcs)
    assert text.count("<svg") == 4  # detection, confidence, strength, flicker
    assert "identity / model" in text and "pass" in text
    for stage in ("analyze", "render", "total"):
        assert f"<th>{stage}</th>" in text
    assert not (tmp_path / "r_files").exists()  # embedded: nothing left next to the page


def test_previews_next_to_page(restored, tmp_path):
    page = write_report(restored, tmp_path / "r.html", embed=False)
    text = page.read_text()
    assert 'src="r_files/input.mp4"' in text and 'src="r_files/output.mp4"' in text
    assert (tmp_path / "r_files" / "input.mp4").stat().st_size > 1000
    index = write_index([(page, restored)], tmp_path / "index.html")
    assert 'href="r.html"' in index.read_text()


def test_blended_less_frames_are_marked(restored, tmp_path):
    """Frames pasted at reduced strength show as red marks on the strength plot."""
    from dataclasses import replace

    recs = [dict(r) for r in restored.per_frame]
    for r in recs[5:8]:
        r.update(strength=0.4, outside=0.9, margin=0.1, kept=0.5)
    page = write_report(replace(restored, per_frame=recs), tmp_path / "r.html")
    text = page.read_text()
    strength_svg = text[text.index("paste strength") :].split("</svg>")[0]
    assert strength_svg.count('fill="#e33"') == 3


def test_html_needs_html_name(clip, tmp_path):
    res = CliRunner().invoke(
        app, ["restore", str(clip), str(tmp_path / "o.mp4"), "--html", str(tmp_path / "r.txt")]
    )
    assert res.exit_code == 2 and "--html" in res.output


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_plays_in_chromium(tmp_path):
    """The CLI's page in headless Chromium: no console errors, both videos play in sync,
    the mouth zoom draws, a screenshot is written."""
    from tests.conftest import make_clip

    # 6 s: long enough that a slow (loaded) machine still looks while both videos play
    clip = make_clip(tmp_path / "long.mp4", 150)
    page = tmp_path / "report.html"
    res = CliRunner().invoke(
        app, ["restore", str(clip), str(tmp_path / "out.mp4"), "--html", str(page), "-q"]
    )
    assert res.exit_code == 0, res.output
    with Browser() as b:
        b.open(page)
        b.wait_for("threpairReport.vin.readyState >= 2 && threpairReport.vout.readyState >= 2")
        assert b.evaluate("threpairReport.vout.play().then(() => true)", await_promise=True)
        b.wait_for("threpairReport.vout.currentTime > 1.0")
        # one snapshot of both players, taken in the page in one go
        t_in, t_out, in_paused, out_ended = b.evaluate(
            "[threpairReport.vin.currentTime, threpairReport.vout.currentTime,"
            " threpairReport.vin.paused, threpairReport.vout.ended]"
        )
        assert not out_ended, t_out  # looked while the output was still playing
        assert t_in > 0.8, (t_in, t_out)  # the input advanced with it: it plays
        assert not in_paused and abs(t_in - t_out) < 0.2  # the input follows the output
        # the zoomed mouth canvas shows video pixels, not the black fill
        lit = b.evaluate(
            "(() => { const d = document.getElementById('z-out').getContext('2d')"
            ".getImageData(0, 0, 256, 256).data; let s = 0;"
            " for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2]; return s; })()"
        )
        assert lit > 256 * 256 * 30
        b.evaluate("document.getElementById('wipe').click()")
        assert b.evaluate("document.getElementById('videos').classList.contains('wipe')")
        shot = b.screenshot(tmp_path / "report.png")
        assert b.errors == [], b.errors
    w, h = _png_size(shot)
    assert w >= 800 and h >= 800


def test_folder_run_writes_a_page_per_video_and_an_index(tmp_path):
    from tests.conftest import make_clip

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_clip(src / "a.mp4", 12)
    make_clip(src / "sub" / "b.mp4", 12, seed=1)
    reports = tmp_path / "reports"
    res = CliRunner().invoke(
        app, ["restore", str(src), str(tmp_path / "out"), "--html", str(reports), "-q"]
    )
    assert res.exit_code == 0, res.output
    pages = sorted(p.name for p in reports.glob("*.html"))
    assert pages == ["a.html", "index.html", "sub__b.html"]
    index = (reports / "index.html").read_text()
    assert 'href="a.html"' in index and 'href="sub__b.html"' in index
    assert "b.mp4" in (reports / "sub__b.html").read_text()
