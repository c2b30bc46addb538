"""Batch restore: planning (mirrored names, skips, globs, shards), running (errors recorded,
never fatal; Ctrl-C stops cleanly; JSON-lines log), and the real pipeline over a folder."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import make_clip
from threpair.batch import (
    BatchInterrupted,
    Job,
    RestoreProcess,
    is_single_file,
    parse_shard,
    plan_jobs,
    run_jobs,
    run_one,
    shard_of,
)
from threpair.errors import InputError, VideoError
from threpair.restore import Passthrough
from threpair.video import probe


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def names(jobs: list[Job]) -> list[str]:
    return [j.name for j in jobs]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- planning


@pytest.mark.parametrize("text, expected", [("2/8", (2, 8)), (" 1 / 1 ", (1, 1)), ("8/8", (8, 8))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/8", "9/8", "2", "2/0", "a/b", "-1/4", "1/2/3", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(InputError, match="I/N"):
        parse_shard(text)


def test_plan_folder_mirrors_tree_and_skips_done(tmp_path):
    gen, out = tmp_path / "gen", tmp_path / "out"
    touch(gen, "a.mp4", "B.MOV", "sub/c.mkv", "notes.txt", "x.tone.m4a", ".a.threpair-tmp-7.mp4")
    touch(gen, ".cache/d.mp4")
    jobs = plan_jobs([gen], out)
    assert names(jobs) == ["B.MOV", "a.mp4", "sub/c.mkv"]
    assert [j.output for j in jobs] == [out / "B.MOV", out / "a.mp4", out / "sub" / "c.mkv"]
    assert {j.status for j in jobs} == {"todo"}
    touch(out, "sub/c.mkv")
    assert [j.status for j in plan_jobs([gen], out)] == ["todo", "todo", "skipped"]
    assert {j.status for j in plan_jobs([gen], out, overwrite=True)} == {"todo"}


def test_plan_files_and_globs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "gen/a.mp4", "gen/b.webm", "gen/sub/c.m4v", "gen/sub/a.mp4", "other/odd.bin")
    # a quoted pattern: names relative to the pattern's fixed folders, subfolders kept
    assert names(plan_jobs(["gen/**/*.mp4"], Path("out"))) == ["a.mp4", "sub/a.mp4"]
    assert names(plan_jobs(["gen/*"], Path("out"))) == ["a.mp4", "b.webm", "sub/a.mp4", "sub/c.m4v"]
    # explicit files keep their name (any extension); a file given twice runs once
    jobs = plan_jobs(["gen/b.webm", "other/odd.bin", "gen/b.webm"], Path("out"))
    assert names(jobs) == ["b.webm", "odd.bin"]
    # what the shell makes of gen/*/a.mp4 gen/a.mp4: two files that would write out/a.mp4
    with pytest.raises(InputError, match="both be written"):
        plan_jobs(["gen/a.mp4", "gen/sub/a.mp4"], Path("out"))
    with pytest.raises(InputError, match="no such file"):
        plan_jobs(["gen/missing.mp4"], Path("out"))
    with pytest.raises(InputError, match="matches no videos"):
        plan_jobs(["gen/*.avi"], Path("out"))
    with pytest.raises(InputError, match="holds no videos"):
        plan_jobs(["other"], Path("out"))


def test_plan_rejects_outputs_that_clash_with_inputs(tmp_path):
    gen = tmp_path / "gen"
    touch(gen, "a.mp4", "sub/b.mp4")
    with pytest.raises(InputError, match="output folder is the input folder"):
        plan_jobs([gen], gen)
    with pytest.raises(InputError, match="overwrite an input"):
        plan_jobs([gen / "a.mp4"], gen)
    touch(tmp_path, "file.mp4")
    with pytest.raises(InputError, match="must be a folder"):
        plan_jobs([gen], tmp_path / "file.mp4")
    # an output folder inside the input folder is left out of the search (rerun-safe)
    touch(gen, "fixed/a.mp4", "fixed/sub/b.mp4")
    for inputs in ([gen], [str(gen / "**" / "*.mp4")]):
        jobs = plan_jobs(inputs, gen / "fixed")
        assert names(jobs) == ["a.mp4", "sub/b.mp4"]
        assert [j.status for j in jobs] == ["skipped", "skipped"]


def test_is_single_file(tmp_path):
    touch(tmp_path, "a.mp4", "d/b.mp4")
    assert is_single_file([tmp_path / "a.mp4"], tmp_path / "out.mp4")
    assert is_single_file([tmp_path / "missing.mp4"], tmp_path / "out.mp4")  # old error path
    assert not is_single_file([tmp_path / "a.mp4"], tmp_path / "d")  # existing folder
    assert not is_single_file([tmp_path / "a.mp4"], f"{tmp_path}/new/")
    assert not is_single_file([tmp_path / "a.mp4"], tmp_path / "new")  # no extension
    assert not is_single_file([tmp_path / "d"], tmp_path / "out.mp4")
    assert not is_single_file([f"{tmp_path}/*.mp4"], tmp_path / "out.mp4")
    assert not is_single_file([tmp_path / "a.mp4", tmp_path / "d/b.mp4"], tmp_path / "o.mp4")


def test_shards_partition_and_are_stable(tmp_path):
    gen = tmp_path / "gen"
    touch(gen, *[f"s{i % 7}/clip_{i:03d}.mp4" for i in range(150)])
    full = names(plan_jobs([gen], tmp_path / "out"))
    assert len(full) == 150
    for n in (1, 2, 3, 8):
        parts = [names(plan_jobs([gen], tmp_path / "out", shard=(i, n))) for i in range(1, n + 1)]
        assert sorted(sum(parts, [])) == full  # union is everything, nothing twice
        assert all(parts), "a shard came out empty"
    before = {name: shard_of(name, 8) for name in full}
    touch(gen, *[f"new/extra_{i}.mp4" for i in range(40)])  # adding files moves nothing
    for i in range(1, 9):
        kept = [m for m in names(plan_jobs([gen], tmp_path / "out", shard=(i, 8))) if m in before]
        assert all(before[m] == i for m in kept)
    assert shard_of("café.mp4", 8) == shard_of("cafe\u0301.mp4", 8)  # NFC vs NFD names


# ---------------------------------------------------------------- running (fake process)


def fake_jobs(tmp_path: Path, n: int) -> list[Job]:
    return [Job(tmp_path / f"in{i}", tmp_path / "out" / f"o{i}", f"o{i}") for i in range(n)]


def test_run_records_every_error_and_goes_on(tmp_path):
    def process(job: Job) -> dict:
        if job.name == "o1":
            raise VideoError(f"{job.input}: not a readable video file")
        if job.name == "o3":
            raise ZeroDivisionError("division by zero")
        return {"frames": 10}

    jobs = fake_jobs(tmp_path, 6)
    jobs[5] = Job(jobs[5].input, jobs[5].output, jobs[5].name, "skipped")
    events: list[dict] = []
    log = tmp_path / "run.jsonl"
    result = run_jobs(jobs, process, log, jobs_parallel=3, on_event=events.append)
    assert result.failed and result.counts == {
        "done": 3, "skipped": 1, "failed": 2, "interrupted": 0, "pending": 0,
    }  # fmt: skip
    assert [r.job.name for r in result.rows] == [j.name for j in jobs]  # job order kept
    assert result.frames == 30
    bad = {r.job.name: r for r in result.failures}
    assert bad["o1"].error == "VideoError" and "not a readable video" in bad["o1"].reason
    assert (
        bad["o3"].error == "ZeroDivisionError"
        and "unexpected ZeroDivisionError" in bad["o3"].reason
    )
    records = {r["name"]: r for r in read_log(log)}
    assert len(records) == 6 and records["o5"]["status"] == "skipped"
    assert "Traceback" in records["o3"]["traceback"] and "traceback" not in records["o1"]
    assert records["o0"]["frames"] == 10 and records["o0"]["seconds"] >= 0
    assert sum(e["event"] == "start" for e in events) == 5
    assert sum(e["event"] == "end" for e in events) == 6
    assert "3 done" in result.summary() and "2 failed" in result.summary()


@pytest.mark.parametrize("parallel", [1, 3])
def test_ctrl_c_stops_the_batch_and_keeps_the_log(tmp_path, parallel):
    first_done, interrupted = threading.Event(), threading.Event()

    def process(job: Job) -> dict:
        if job.name == "o1":
            first_done.wait(timeout=5)
            interrupted.set()
            raise KeyboardInterrupt  # what Ctrl-C looks like in the running file
        if job.name != "o0":  # with parallel workers, files after o1 end after the Ctrl-C
            interrupted.wait(timeout=5)  # (else instant jobs could all finish before it)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("done")
        first_done.set()
        return {"frames": 1}

    jobs = fake_jobs(tmp_path, 12)
    log = tmp_path / "run.jsonl"
    with pytest.raises(BatchInterrupted) as info:
        run_jobs(jobs, process, log, jobs_parallel=parallel)
    result = info.value.result
    statuses = {r.job.name: r.status for r in result.rows}
    assert statuses["o1"] == "interrupted" and result.counts["pending"] > 0
    assert len(read_log(log)) == len(result.rows)
    done = [n for n, s in statuses.items() if s == "done"]
    assert "o0" in done and all((tmp_path / "out" / n).exists() for n in done)
    # the rerun (same names, so plan_jobs would mark these skipped) skips what is finished
    rerun = [
        Job(j.input, j.output, j.name, "skipped" if j.output.exists() else "todo") for j in jobs
    ]
    result2 = run_jobs(rerun, lambda job: {}, log)
    assert result2.counts["skipped"] == len(done) and not result2.failed


# ---------------------------------------------------------------- the real pipeline


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """12 frames at 160x120: RetinaFace still finds the face in every frame."""
    return make_clip(tmp_path_factory.mktemp("small") / "talk.mp4", n_frames=12, size=(160, 120))


def test_restore_folder_end_to_end(tmp_path, small_clip):
    gen, out, log = tmp_path / "gen", tmp_path / "fixed", tmp_path / "run.jsonl"
    (gen / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.MOV", "sub/c.mp4"):
        shutil.copy(small_clip, gen / name)
    (gen / "notes.mp4").write_text("not a video\n" * 20)
    (gen / "cut.mp4").write_bytes(small_clip.read_bytes()[:5000])
    (gen / "empty.mp4").write_bytes(b"")

    stop = threading.Event()
    process = RestoreProcess(Passthrough, stop=stop)
    jobs = plan_jobs([gen], out)
    result = run_jobs(jobs, process, log, jobs_parallel=2, stop=stop)

    assert result.failed
    assert result.counts["done"] == 3 and result.counts["failed"] == 3
    for name in ("a.mp4", "b.MOV", "sub/c.mp4"):
        assert probe(out / name).frame_count == 12
    reasons = {r.job.name: r.reason for r in result.failures}
    assert "not a readable video" in reasons["notes.mp4"]
    assert "truncated" in reasons["cut.mp4"]
    assert "empty" in reasons["empty.mp4"]
    assert all(r.error == "VideoError" for r in result.failures)
    done = [r for r in result.rows if r.status == "done"]
    assert all(r.info["frames_with_face"] == 12 and not r.warnings for r in done)
    assert not list(out.rglob(".*threpair-tmp*")) and not (out / "notes.mp4").exists()
    records = read_log(log)
    assert sorted(r["name"] for r in records) == sorted(j.name for j in jobs)
    assert {r["status"] for r in records} == {"done", "failed"}

    # rerun: finished files are skipped, the broken ones are tried (and fail) again
    jobs2 = plan_jobs([gen], out)
    assert [j.status for j in jobs2].count("skipped") == 3
    result2 = run_jobs(jobs2, process, log, stop=stop)
    assert result2.counts["skipped"] == 3 and result2.counts["failed"] == 3
    assert len(read_log(log)) == 12


def test_stopped_restore_leaves_nothing_behind(tmp_path, small_clip):
    process = RestoreProcess(Passthrough)
    process.stop.set()  # as if Ctrl-C came in during the file
    job = Job(small_clip, tmp_path / "out" / "talk.mp4", "talk.mp4")
    row = run_one(job, process, process.stop)
    assert row.status == "interrupted"
    assert list((tmp_path / "out").iterdir()) == []
