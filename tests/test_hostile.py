"""Issue 13: malformed and hostile setups. nncheck never hangs, never loses the report, never mixes the user's output
into it, names the real culprit, and never shows a raw traceback.

The command-line cases run `python -m nncheck` in a subprocess (with a timeout: a regression shows up as a failed
test, not a hung suite) on a folder of setups at once; the wrong-culprit cases run the battery in-process. Time
budgets are short (1-2 s per phase) so that the hangs cost seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hostile import SETUPS, write

import nncheck
from nncheck.config import Config
from nncheck.report import SetupReport, Status
from nncheck.runner import run_setup
from nncheck.setup import SetupError, load_setup

ROOT = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"


def cli(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run `python -m nncheck ARGS` in ``cwd``: (exit code, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nncheck", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ the CLI gate
HOSTILE_FOLDER = (
    "good",
    "prints",
    "exit_at_import",
    "meta_device",
    "lock_instance",
    "dies",
    "block_forward",
    "block_data",
    "swallow_exception",
    "swallow_everything",
)


# the tests reading the folder run share one worker under `--dist loadgroup` (the run is made once per worker)
FOLDER = pytest.mark.xdist_group("hostile-folder-run")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `nncheck run FOLDER -f json` over every hostile setup of the command-line cases (and a good one)."""
    folder = tmp_path_factory.mktemp("hostile")
    write(folder / "setups", *HOSTILE_FOLDER)
    args = ("run", "setups", "--only", "initial-loss", "--time-budget", "2", "-f", "json")
    rc, out, err, seconds = cli(*args, cwd=folder)
    return {"rc": rc, "out": out, "err": err, "seconds": seconds}


def by_name(doc: dict) -> dict[str, dict]:
    return {Path(s["path"]).stem: s for s in doc["setups"]}


@FOLDER
def test_folder_run_reports_every_setup_as_valid_json(folder_run):
    doc = json.loads(folder_run["out"])  # whatever the setups print or do
    assert sorted(by_name(doc)) == sorted(HOSTILE_FOLDER)
    assert folder_run["rc"] == 3, folder_run["err"][-3000:]  # a setup was stopped: the largest code wins
    assert TRACEBACK not in folder_run["out"] + folder_run["err"]
    # 3 setups stopped at their 2 s limit and one killed 2 s later: seconds, not forever
    assert folder_run["seconds"] < 90


@FOLDER
def test_the_good_setup_is_reported_next_to_the_broken_ones(folder_run):
    good = by_name(json.loads(folder_run["out"]))["good"]
    assert good["ok"] and [r["status"] for r in good["results"]] == ["pass"]


@FOLDER
def test_user_output_goes_to_stderr(folder_run):
    err = folder_run["err"]
    assert "hello from the import of the setup file" in err and "forward called on" in err
    assert "a raw write on file descriptor 1" in err  # C-level writes on fd 1 too
    assert "about to exit" in err
    assert by_name(json.loads(folder_run["out"]))["prints"]["ok"]


@FOLDER
def test_sys_exit_at_import_is_a_setup_error(folder_run):
    s = by_name(json.loads(folder_run["out"]))["exit_at_import"]
    assert "SystemExit" in s["error"] and "3" in s["error"] and not s["ok"]


@FOLDER
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("meta_device", ("meta", "device")),
        ("lock_instance", ("cannot be deep-copied", "lock", "def model()")),
    ],
)
def test_models_that_cannot_be_used_get_a_sentence(folder_run, name, words):
    s = by_name(json.loads(folder_run["out"]))[name]
    assert "stopped" not in s and s["error"], s
    for w in words:
        assert w in s["error"], s["error"]


@FOLDER
@pytest.mark.parametrize(
    ("name", "how", "line"),
    [
        ("block_forward", "timeout", "threading.Event().wait()"),
        ("block_data", "timeout", "time.sleep(1000)"),
        ("swallow_exception", "timeout", "time.sleep(1000)"),
        ("swallow_everything", "killed", "time.sleep(1000)"),
    ],
)
def test_hung_setups_are_stopped_naming_the_phase_and_the_line(folder_run, name, how, line):
    s = by_name(json.loads(folder_run["out"]))[name]
    stopped = s["stopped"]
    assert stopped["how"] == how and stopped["phase"] == "preflight", stopped
    assert 1.5 < stopped["after_s"] < 30
    assert line in stopped["where"] and f"{name}.py" in stopped["where"]
    assert "stopped" in s["error"] and line in s["error"]


@FOLDER
def test_a_setup_whose_process_dies_is_reported(folder_run):
    s = by_name(json.loads(folder_run["out"]))["dies"]
    assert s["stopped"]["how"] == "died" and "exit code 7" in s["error"], s


def test_output_paths_are_checked_before_the_battery(tmp_path):
    write(tmp_path, "good")
    rc, out, err, seconds = cli("run", "good.py", "-o", "/nonexistent/x.json", cwd=tmp_path, timeout=60)
    assert rc == 2 and "/nonexistent" in err and "does not exist" in err
    assert TRACEBACK not in err and "PASS" not in out + err  # nothing ran
    assert seconds < 20  # refused before torch is even imported (about 0.3 s)
    rc, out, err, _ = cli("run", "good.py", "-f", "json", "-o", str(tmp_path), cwd=tmp_path, timeout=60)
    assert rc == 2 and "is a folder" in err


def test_progress_lines_on_a_non_terminal_and_where_the_report_went(tmp_path):
    write(tmp_path, "prints")
    args = ("run", "prints.py", "--only", "initial-loss,data", "-f", "junit", "-f", "html", "-o", "-", "-o", "r.html")
    rc, out, err, _ = cli(*args, cwd=tmp_path)
    assert rc == 0, err
    root = ET.fromstring(out)  # JUnit on stdout stays valid while the setup prints
    assert {c.get("name") for c in root.iter("testcase")} == {"data", "initial-loss"}
    assert "forward called" not in out and "forward called" in err
    lines = err.splitlines()
    assert any("prints.py" in ln and "PASS" in ln and "initial-loss" in ln for ln in lines), err
    assert any("prints.py" in ln and "PASS" in ln and " data" in ln for ln in lines), err
    assert any("prints.py: OK: 2 pass" in ln for ln in lines), err
    assert any(ln == "nncheck: wrote the html report to r.html" for ln in lines), err


def test_quiet_and_colour_choices(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from nncheck.cli import main, use_color

    write(tmp_path, "good")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", "good.py", "--only", "data", "-q"])
    assert res.exit_code == 0 and res.stderr == "" and "PASS" in res.stdout
    assert use_color(None, "-", True, {}) and not use_color(None, "-", True, {"NO_COLOR": "1"})
    assert use_color(None, "-", True, {"NO_COLOR": ""})  # set but empty: no-color.org says colour stays
    assert not use_color(None, "-", False, {}) and not use_color(None, "report.txt", True, {})
    assert use_color(True, "-", False, {"NO_COLOR": "1"}) and not use_color(False, "-", True, {})


def test_in_process_runs_keep_user_output_off_stdout_too(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from nncheck.cli import main

    write(tmp_path, "prints")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", "prints.py", "--only", "initial-loss", "--in-process", "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["setups"][0]["ok"]
    assert "hello from the import of the setup file" in res.stderr and "forward called on" in res.stderr


def test_no_color_is_respected_on_a_terminal(tmp_path):
    pty = pytest.importorskip("pty")
    write(tmp_path, "good")
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nncheck", "run", "good.py", "--only", "data"],
        cwd=tmp_path,
        stdout=follower,
        stderr=follower,  # the progress bar too
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert "PASS" in text and "data" in text
    assert "\x1b[3" not in text and "\x1b[1;3" not in text and "\x1b[4" not in text  # no colour codes at all


# ------------------------------------------------------------------------------------------------ in-process
def test_api_stops_a_blocking_forward(tmp_path):
    (path,) = write(tmp_path, "block_forward")
    t0 = time.perf_counter()
    with pytest.raises(SetupError, match=r"stopped after [\d.]+ s in the preflight") as e:
        nncheck.check_file(str(path), time_budget_s=1, only=["initial-loss"])
    assert time.perf_counter() - t0 < 15
    assert "threading.Event().wait()" in str(e.value)


def test_api_timeout_cannot_be_swallowed_by_except_exception(tmp_path):
    (path,) = write(tmp_path, "swallow_exception")
    with pytest.raises(SetupError, match="stopped after"):
        nncheck.check_file(str(path), time_budget_s=1, only=["initial-loss"])


def test_api_probe_blocked_in_user_code_is_inconclusive_and_named(tmp_path):
    (path,) = write(tmp_path, "block_later")
    t0 = time.perf_counter()
    report = nncheck.check_file(str(path), time_budget_s=1, only=["overfit-batch"], budget="fast")
    assert time.perf_counter() - t0 < 20
    r = report["overfit-batch"]
    assert r.status is Status.SKIP and "inconclusive" in r.message and "threading.Event().wait()" in r.message


def test_api_model_instance_that_cannot_be_copied_is_a_setup_error(tmp_path):
    ns: dict = {}
    exec(SETUPS["lock_instance"], ns)
    with pytest.raises(SetupError, match="cannot be deep-copied") as e:
        nncheck.check(model=ns["model"], data=ns["data"], only=["initial-loss"])
    assert "`model.lock`" in str(e.value) and "def model()" in str(e.value)


def battery(tmp_path: Path, name: str, **overrides) -> SetupReport:
    (path,) = write(tmp_path, name)
    return run_setup(load_setup(str(path)), Config(), {"budget": "fast", **overrides})


def statuses(sr: SetupReport) -> dict[str, str]:
    return {r.id: r.status.value for r in sr.results}


def test_a_model_factory_that_cannot_be_copied_still_runs(tmp_path):
    sr = battery(tmp_path, "lock_factory")
    assert sr.error is None and sr.results
    assert "error" not in statuses(sr).values(), [(r.id, r.message) for r in sr.results if r.status is Status.ERROR]


def test_labels_out_of_range_in_a_later_batch_blame_the_data(tmp_path):
    sr = battery(tmp_path, "labels_later")
    st = statuses(sr)
    assert st["data"] == "fail"
    assert "error" not in st.values(), [(r.id, r.message) for r in sr.results if r.status is Status.ERROR]
    skipped = [r for r in sr.results if r.status is Status.SKIP and "`data`" in r.message]
    assert skipped, "the probes that crashed on the bad batch point at the data probe"
    assert not any("nncheck bug" in r.message + r.hint for r in sr.results)


def test_one_based_labels_in_the_first_batch_are_the_data_probe_failing(tmp_path):
    sr = battery(tmp_path, "labels_one_based")
    assert sr.error is None
    st = statuses(sr)
    assert st.pop("data") == "fail" and set(st.values()) == {"skip"}
    assert all("`data`" in r.message for r in sr.results if r.id != "data")
    assert sr.exit_code() == 1


def test_one_based_labels_with_the_data_probe_off_are_still_an_error(tmp_path):
    sr = battery(tmp_path, "labels_one_based", only=["initial-loss"])
    (r,) = sr.results
    assert r.status is Status.ERROR and "`data`" in r.message and "1-based" in r.message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("all_frozen", ("frozen",)),
        ("grad_off", ("grad mode is off", "set_grad_enabled(False)")),
        ("zero_params", ("no parameters", "nn.ModuleList")),
    ],
)
def test_nothing_can_train_is_the_gradient_flow_probe_failing(tmp_path, name, words):
    sr = battery(tmp_path, name)
    assert sr.error is None, sr.error
    gf = sr.result("gradient-flow")
    assert gf.status is Status.FAIL and gf.hint
    for w in words:
        assert w in gf.message + gf.hint, gf.message
    assert sr.result("data").status is Status.PASS  # the data probe needs no gradient: it runs as usual
    others = [r for r in sr.results if r.id not in ("gradient-flow", "data")]
    assert all(r.status is Status.SKIP and "`gradient-flow`" in r.message for r in others)
    text = " ".join(r.message for r in sr.results)
    assert "does not require grad" not in text and "optimizer got an empty parameter list" not in text
    assert sr.exit_code() == 1


def test_grad_mode_turned_off_at_import_is_given_back(tmp_path):
    import torch

    try:
        battery(tmp_path, "grad_off", only=["initial-loss"])
        assert torch.is_grad_enabled()  # nncheck reports the setup's import turning it off, then puts it back
    finally:
        torch.set_grad_enabled(True)


def test_an_unexpected_exception_is_the_setups_error_with_the_users_line(tmp_path):
    (path,) = write(tmp_path, "train_raises")
    sr = run_setup(load_setup(str(path)), Config(), {"only": ["initial-loss"]})
    assert sr.error is not None and TRACEBACK not in sr.error
    assert "your code raised during the preflight: RuntimeError: this model cannot be put in train mode" in sr.error
    assert "train_raises.py" in sr.error and "raise RuntimeError" in sr.error


def test_a_forward_that_raises_on_its_third_call_runs_the_probes(tmp_path):
    sr = battery(tmp_path, "raises_third_call")
    assert sr.error is None and sr.results
    errors = [r for r in sr.results if r.status is Status.ERROR]
    assert errors and all("flaky forward: third call" in r.message for r in errors)
    assert all("raises_third_call.py" in r.message for r in errors)  # the user's line
    assert sr.exit_code() == 1
