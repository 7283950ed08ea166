"""Output folders never mixed, OS errors as one line, --version, --quiet and progress.

Each command writes only into a new or empty folder, or one of its own kind (replaced only with
--overwrite, the new folder written beside the old and renamed over it when complete); every
refusal and every operating-system error is one line and exit status 2.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from experiments import folders
from experiments.cli import main
from experiments.folders import (
    DEMO_FOLDER,
    RUN_FOLDER,
    SWEEP_FOLDER,
    VALIDATION_FOLDER,
    OutputFolder,
    kind_of,
)
from model.errors import UsageError
from model.results import run_status
from tests.helpers import small_config

REPO = Path(__file__).resolve().parent.parent


class _Terminal(io.StringIO):
    """stderr as a terminal: progress bars draw on it."""

    def isatty(self):
        return True


def _config(tmp_path, name="c.toml", **overrides) -> Path:
    path = tmp_path / name
    data = small_config(
        steps=3, traders={"count": 40}, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]
    )
    data.update(overrides)
    path.write_text(tomli_w.dumps(data))
    return path


def _one_line(code, err, *words):
    assert code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("contagion: error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def _run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _siblings(folder: Path) -> list[str]:
    """Hidden folders an overwrite leaves beside ``folder`` (none after it ends)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture
def run_folder(tmp_path, capsys):
    """A finished run folder (seed 7)."""
    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", _config(tmp_path), "--out", out)
    assert code == 0, err
    return out


# --------------------------------------------------------------------------------------------
# Kinds of folder
# --------------------------------------------------------------------------------------------


def test_kinds_are_recognised_by_their_files(tmp_path):
    def folder(name, *files):
        f = tmp_path / name
        f.mkdir()
        for rel in files:
            (f / rel).parent.mkdir(parents=True, exist_ok=True)
            (f / rel).write_text("x")
        return f

    assert kind_of(folder("run", "config.toml", "summary.json", "market.parquet")) is RUN_FOLDER
    assert kind_of(folder("cut", ".incomplete", "config.toml")) is RUN_FOLDER
    assert kind_of(folder("sweep", "sweep.json", ".incomplete", "runs/p0-r0.json")) is SWEEP_FOLDER
    demo = folder("demo", "config.toml", "summary.json", "isolated/summary.json")
    assert kind_of(demo) is DEMO_FOLDER
    assert kind_of(folder("demo2", "narration.txt")) is DEMO_FOLDER
    assert kind_of(folder("val", "results.json", "fixed_point.png")) is VALIDATION_FOLDER
    assert kind_of(folder("val2", "report.md")) is VALIDATION_FOLDER
    assert kind_of(folder("other", "config.toml", "notes.txt")) is None
    assert kind_of(folder("empty")) is None


def test_output_folder_claims_new_empty_and_own_folders(tmp_path):
    new = tmp_path / "a" / "b"
    with OutputFolder(new, RUN_FOLDER) as where:
        assert where == new and new.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    with OutputFolder(empty, RUN_FOLDER) as where:
        assert where == empty
    # an error before anything is written removes the folder the claim created
    gone = tmp_path / "gone"
    with pytest.raises(RuntimeError), OutputFolder(gone, RUN_FOLDER):
        raise RuntimeError("the run failed")
    assert not gone.exists()
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.toml").write_text("old")
    (own / "summary.json").write_text("old")
    with pytest.raises(
        UsageError, match=r"^--out .*own: already holds a run folder; pass --overwrite"
    ):
        OutputFolder(own, RUN_FOLDER).claim()
    default = OutputFolder(None, RUN_FOLDER, default=own)
    with pytest.raises(
        UsageError, match=r"own: already holds a run folder; pass --overwrite .*--out"
    ):
        default.claim()
    with OutputFolder(own, RUN_FOLDER, overwrite=True) as where:
        assert where.parent == own.parent and where.name.startswith(".own.")
        assert (own / "config.toml").read_text() == "old"  # untouched while writing
        (where / "config.toml").write_text("new")
        (where / "summary.json").write_text("new")
    assert sorted(p.name for p in own.iterdir()) == ["config.toml", "summary.json"]
    assert (own / "config.toml").read_text() == "new"
    assert _siblings(own) == []


def test_output_folder_refuses_what_is_not_its_own(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("months of work")
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=r"not empty and not a run folder"):
            OutputFolder(other, RUN_FOLDER, overwrite=overwrite).claim()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    with pytest.raises(UsageError, match=r"holds a sweep folder, not a run folder"):
        OutputFolder(sweep, RUN_FOLDER, overwrite=True).claim()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match=r"exists and is not a folder"):
        OutputFolder(afile, RUN_FOLDER).claim()
    with pytest.raises(UsageError, match=r"cannot create the run folder: .*afile is not a folder"):
        OutputFolder(afile / "sub", RUN_FOLDER).claim()
    with pytest.raises(
        UsageError, match=r"x: cannot be used as the run folder: File name too long"
    ):
        OutputFolder(tmp_path / ("x" * 300), RUN_FOLDER).claim()
    assert (other / "thesis.tex").read_text() == "months of work"


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def test_run_refuses_foreign_and_own_folders_and_overwrite_replaces(run_folder, tmp_path, capsys):
    cfg = _config(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    code, _, err = _run(capsys, "run", cfg, "--out", foreign, "--overwrite")
    _one_line(code, err, str(foreign), "not empty and not a run folder")
    assert (foreign / "data.csv").read_text() == "1,2\n"

    before = _digest(run_folder)
    code, _, err = _run(capsys, "run", cfg, "--out", run_folder, "--seed", "8")
    _one_line(code, err, f"--out {run_folder}", "already holds a run folder", "--overwrite")
    assert _digest(run_folder) == before

    (run_folder / "figures").mkdir()
    (run_folder / "figures" / "old.png").write_bytes(b"old")
    code, out, err = _run(capsys, "run", cfg, "--out", run_folder, "--seed", "8", "--overwrite")
    assert code == 0, err
    assert f"run folder: {run_folder}" in out
    summary = json.loads((run_folder / "summary.json").read_text())
    assert summary["seed"] == 8 and summary["provenance"]["seed"] == 8
    assert not (run_folder / "figures").exists()  # replaced, not mixed
    assert run_status(run_folder) == "complete" and _siblings(run_folder) == []


def test_the_default_folder_follows_the_same_rule(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    code, _, err = _run(capsys, "run", cfg)
    assert code == 0, err
    default = Path("results") / "small"
    assert run_status(default) == "complete"
    code, _, err = _run(capsys, "run", cfg)
    _one_line(code, err, "results/small: already holds a run folder", "--overwrite", "--out")
    code, _, err = _run(capsys, "run", cfg, "--overwrite", "--quiet")
    assert code == 0, err


def test_an_interrupted_overwrite_leaves_the_old_folder_intact(run_folder, tmp_path, capsys):
    import experiments.run

    before = _digest(run_folder)
    real = experiments.run.write_run_folder

    def interrupted(model, folder):
        real(model, folder)  # the new folder is complete ...
        raise KeyboardInterrupt  # ... but the command is stopped before it takes the old's place

    experiments.run.write_run_folder = interrupted
    try:
        code, _, err = _run(
            capsys, "run", _config(tmp_path), "--out", run_folder, "--seed", "9", "--overwrite"
        )
    finally:
        experiments.run.write_run_folder = real
    assert code == 130 and err == "contagion: interrupted\n"
    assert _digest(run_folder) == before
    assert _siblings(run_folder) == []


_KILLED_OVERWRITE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import model.storage as storage
from experiments.cli import main

real = storage.atomic_write

def dying_write(path, write):
    if path.name == "summary.json":  # the new folder is nearly complete
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, write)

storage.atomic_write = dying_write
main(["run", {config!r}, "--out", {out!r}, "--seed", "11", "--overwrite"])
"""


@pytest.mark.slow
def test_kill_9_during_an_overwrite_leaves_the_old_folder_intact(run_folder, tmp_path):
    before = _digest(run_folder)
    script = _KILLED_OVERWRITE.format(
        root=str(REPO), config=str(_config(tmp_path)), out=str(run_folder)
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert _digest(run_folder) == before and run_status(run_folder) == "complete"
    # the unfinished new folder is the hidden sibling, never mixed into the old one
    (left,) = _siblings(run_folder)
    assert left.endswith(".new") and run_status(run_folder.parent / left) == "incomplete"


def test_demo_and_validate_refuse_before_any_work(run_folder, tmp_path, capsys):
    t0 = time.perf_counter()
    code, _, err = _run(capsys, "demo", "--out", run_folder)
    _one_line(code, err, str(run_folder), "holds a run folder, not a demo folder")
    code, _, err = _run(capsys, "validate", "--quick", "--out", run_folder, "--overwrite")
    _one_line(code, err, str(run_folder), "holds a run folder, not a validation report")
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text("{}")
    code, _, err = _run(capsys, "validate", "--quick", "--out", report)
    _one_line(code, err, str(report), "already holds a validation report", "--overwrite")
    demo = tmp_path / "demo"
    (demo / "isolated").mkdir(parents=True)
    code, _, err = _run(capsys, "demo", "--out", demo)
    _one_line(code, err, str(demo), "already holds a demo folder", "--overwrite")
    assert time.perf_counter() - t0 < 30  # refused before running anything


def test_sweep_refuses_a_foreign_folder_even_with_resume(tmp_path, capsys):
    (tmp_path / "base.toml").write_text(
        tomli_w.dumps(small_config(steps=2, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]))
    )
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        tomli_w.dumps({"sweep": {"base": "base.toml", "grid": {"traders.leverage": [5.0]}}})
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    for extra in ([], ["--resume"]):
        code, _, err = _run(capsys, "sweep", sweep, "--out", foreign, *extra)
        _one_line(code, err, str(foreign), "is not empty and is not a sweep folder")
    code, _, err = _run(capsys, "sweep", sweep, "--out", foreign.parent / "run", "--resume")
    assert code == 0, err  # --resume of a folder not yet started starts it
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "config.toml").write_text("")
    (tmp_path / "run2" / "summary.json").write_text("{}")
    code, _, err = _run(capsys, "sweep", sweep, "--out", tmp_path / "run2", "--resume")
    _one_line(code, err, "holds a run folder and is not a sweep folder")
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]


# --------------------------------------------------------------------------------------------
# Operating-system errors: one line, exit status 2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err_no", "words"),
    [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")],
)
def test_os_errors_while_writing_are_one_line_naming_the_file(
    tmp_path, capsys, monkeypatch, err_no, words
):
    import model.storage

    real = model.storage.os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "market.parquet":
            raise OSError(err_no, os.strerror(err_no))  # as a full disk says it: no path
        return real(src, dst)

    monkeypatch.setattr(model.storage.os, "replace", failing_replace)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", _config(tmp_path), "--out", out)
    _one_line(code, err, str(out / "market.parquet"), words.lower())
    assert not list(out.glob(".*.tmp"))  # the temporary file went with the error
    assert run_status(out) == "incomplete"


def test_os_error_without_a_path_in_pyarrow_is_one_line(tmp_path, capsys, monkeypatch):
    import pandas as pd

    def full_disk(self, *args, **kwargs):
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", _config(tmp_path), "--out", out)
    _one_line(code, err, str(out / "market.parquet"), "error writing bytes to file")


def test_a_read_only_folder_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    # tests run as root here, where chmod does not stop writes: the check itself is asked
    monkeypatch.setattr(folders.os, "access", lambda path, mode: False)
    code, _, err = _run(capsys, "run", _config(tmp_path), "--out", tmp_path / "ro")
    _one_line(code, err, "ro: the folder is not writable")


def test_corrupt_files_read_by_plot_are_one_line(run_folder, capsys):
    (run_folder / "market.parquet").write_text("not parquet")
    code, _, err = _run(capsys, "plot", run_folder)
    _one_line(code, err, "market.parquet: not a readable parquet file")


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_a_path_under_a_file_is_one_line_in_every_command(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = _config(tmp_path)
    (tmp_path / "base.toml").write_text(
        tomli_w.dumps(small_config(steps=2, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]))
    )
    sweep = tmp_path / "s.toml"
    sweep.write_text(tomli_w.dumps({"sweep": {"base": "base.toml", "grid": {"seed": [1]}}}))
    for args in (
        ["run", cfg, "--out", afile / "sub"],
        ["sweep", sweep, "--out", afile / "sub", "--workers", "1"],
        ["demo", "--out", afile / "sub"],
        ["validate", "--quick", "--out", afile / "sub"],
        ["plot", afile / "sub"],
        ["run", afile / "c.toml"],
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("contagion: error: ") and "afile" in proc.stderr


# --------------------------------------------------------------------------------------------
# --version, --quiet, progress
# --------------------------------------------------------------------------------------------


def test_version_prints_the_installed_version(capsys):
    import importlib.metadata

    try:
        version = importlib.metadata.version("margin-contagion")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"margin-contagion {version}\n"
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"margin-contagion {version}\n"
    assert proc.stderr == ""


def test_run_shows_progress_on_a_terminal_and_quiet_silences_it(tmp_path, capsys, monkeypatch):
    cfg = _config(tmp_path, steps=40)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["run", str(cfg), "--out", str(tmp_path / "a")]) == 0
    states = [s for s in term.getvalue().split("\r") if "step" in s]
    assert states and all("/40" in s for s in states), term.getvalue()
    assert any("step/s" in s or "s/step" in s for s in states)
    out = capsys.readouterr().out.splitlines()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["run", str(cfg), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert quiet.getvalue() == ""
    quiet_out = capsys.readouterr().out.splitlines()
    # the same result lines, and nothing else
    assert len(quiet_out) == len(out) == 2
    assert quiet_out[0].startswith("small: 40 traders, 40 steps")
    assert quiet_out[1] == f"run folder: {tmp_path / 'b'}"
    # not a terminal: no bar either
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert main(["run", str(cfg), "--out", str(tmp_path / "c")]) == 0
    assert plain.getvalue() == ""


def _fake_checks(calls):
    from experiments.validation import check_result

    def check(name, passed):
        def run(quick, out_dir):
            calls.append(name)
            return check_result(name, "a comparison", "1", "1", passed, "")

        return run

    return lambda: [("fixed_point", check("fixed point", True)), ("greenwood", check("glt", False))]


def test_validate_quiet_prints_only_the_result_and_overwrite_replaces(
    tmp_path, capsys, monkeypatch
):
    import experiments.validate as validate

    calls = []
    monkeypatch.setattr(validate, "_checks", _fake_checks(calls))
    out = tmp_path / "report"
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["validate", "--out", str(out)]) == 1
    assert "check" in term.getvalue()  # the bar counted checks
    loud = capsys.readouterr().out.splitlines()
    assert loud[:2] == ["[1/2] fixed point: PASS (0.0 s)", "[2/2] glt: FAIL (0.0 s)"]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["passed"] is False
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["validate", "--out", str(out), "--quiet", "--overwrite"]) == 1
    assert quiet.getvalue() == "1 of 2 checks FAIL: glt\n"
    assert capsys.readouterr().out == f"report: {out / 'report.md'}\n"
    assert calls == ["fixed point", "glt"] * 2 and _siblings(out) == []


def test_sweep_quiet_prints_only_the_result_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "base.toml").write_text(
        tomli_w.dumps(small_config(steps=2, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]))
    )
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        tomli_w.dumps({"sweep": {"base": "base.toml", "grid": {"traders.leverage": [5.0, 9.0]}}})
    )
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert term.getvalue() == ""
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("s: 2 runs (0 failed) in ") and line.endswith(str(out / "runs.parquet"))
    meta = json.loads((out / "sweep.json").read_text())
    prov = meta["provenance"]
    assert prov["seed"] == meta["seed"] == 7 and prov["elapsed_seconds"] > 0
    # resuming keeps the first session's block under "earlier"
    assert main(["sweep", str(sweep), "--out", str(out), "--workers", "1", "--resume"]) == 0
    again = json.loads((out / "sweep.json").read_text())["provenance"]
    assert again["earlier"] == [prov] and again["started"] > prov["started"]
    # the hash is the base config's: what a run folder of the base writes as config.toml
    assert main(["run", str(tmp_path / "base.toml"), "--out", str(tmp_path / "base")]) == 0
    config_toml = (tmp_path / "base" / "config.toml").read_bytes()
    assert (
        again["config_sha256"] == prov["config_sha256"] == hashlib.sha256(config_toml).hexdigest()
    )


@pytest.mark.slow
def test_demo_quiet_prints_the_lesson_and_files_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = _run(capsys, "demo", "--out", out, "--quiet")
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("The lesson: ")
    assert lines[1] == f"run folder: {out} (the isolated run in {out / 'isolated'})"
    assert lines[2].startswith("figures: ")
    narration = (out / "narration.txt").read_text()
    assert lines[0] in narration and "round 1" in narration  # the story is kept in full
    assert kind_of(out) is DEMO_FOLDER and run_status(out / "isolated") == "complete"
    code, _, err = _run(capsys, "demo", "--out", out)
    _one_line(code, err, "already holds a demo folder", "--overwrite")
    (out / "mine.txt").write_text("left over")
    code, stdout, err = _run(capsys, "demo", "--out", out, "--overwrite", "--quiet")
    assert code == 0, err
    again = (out / "narration.txt").read_text()
    assert not (out / "mine.txt").exists()
    assert again.rsplit("done in", 1)[0] == narration.rsplit("done in", 1)[0]  # but the time
    assert _siblings(out) == []
