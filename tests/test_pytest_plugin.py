"""The pytest plugin: setup files collected as one test per probe, outcomes, sharing, -k / -x / --lf / junitxml /
xdist, strict mode, configuration errors, and the `nncheck` fixture.

Most tests register fake probes (monkeypatched into the registry, so they vanish after the test) whose verdicts
are fixed: the plugin's behaviour is tested independently of the real probes' verdicts. One test uses the real
`initial-loss` probe on a tiny setup whose logits are scaled x50 at init.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from nncheck import registry as probes_pkg
from nncheck.registry import Probe
from nncheck.report import Result, Status

pytest_plugins = ["pytester"]

GOOD = """
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, :3]).argmax(dim=1)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
"""

# Logits x50 at init: the loss at init is far above log(3) (initial-loss fails, with a hint).
HOT_LOGITS = (
    GOOD.replace("def model():", "def _net():")
    + """
class Hot(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x) * 50

def model():
    return Hot()
"""
)

FAKE_STATUSES = ("pass", "warn", "fail", "skip", "error")


@pytest.fixture(scope="module", autouse=True)
def _warm_torch_imports():
    """Run one tiny check in this process first. pytester's in-process runs drop the modules they imported when
    they end; torch's lazily imported operator libraries cannot be registered twice, so they must be imported
    before the first inner run (else the second one fails with "Only a single TORCH_LIBRARY ...")."""
    import nncheck

    ns: dict = {}
    exec(GOOD, ns)
    nncheck.check(model=ns["model"], data=ns["data"], only=["initial-loss"])


class Calls:
    """Records which fake probes ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.loads: list[str] = []


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Fake probes `fake-pass`, `fake-warn`, `fake-fail`, `fake-skip`, `fake-error` with fixed verdicts."""
    rec = Calls()
    probes_pkg.registry()  # load the real ones first

    def make(status: str):
        def fn(ctx, params):
            rec.ran.append(f"fake-{status}")
            if status == "error":
                raise RuntimeError("fake probe crashed")
            return Result(
                Status(status),
                f"fake {status} message",
                measured={"fake_value": 1.5},
                expected={"fake_max": 1.0},
                hint=f"apply the fake-{status} fix",
            )

        fn.__doc__ = f"Fake probe that returns {status}."
        return fn

    for i, st in enumerate(FAKE_STATUSES):
        pid = f"fake-{st}"
        monkeypatch.setitem(probes_pkg._REGISTRY, pid, Probe(pid, f"Fake {st}", make(st), order=1000 + i))

    import nncheck.setup

    real_load = nncheck.setup.load_setup

    def counting_load(path):
        rec.loads.append(str(path))
        return real_load(path)

    monkeypatch.setattr(nncheck.setup, "load_setup", counting_load)
    return rec


def project(pytester: pytest.Pytester, only: tuple[str, ...] = FAKE_STATUSES, extra: str = "", **files: str) -> None:
    """A sample project: setups/*.py collected via nncheck_paths, [tool.nncheck] restricted to fake probes."""
    ids = ", ".join(f'"fake-{s}"' if s in FAKE_STATUSES else f'"{s}"' for s in only)
    pytester.makepyprojecttoml(
        f"""
[tool.pytest.ini_options]
nncheck_paths = ["setups/*.py"]

[tool.nncheck]
only = [{ids}]
{extra}
"""
    )
    pytester.mkdir("setups")
    for name, text in (files or {"good": GOOD}).items():
        pytester.path.joinpath("setups", f"{name}.py").write_text(text)


def test_plugin_module_does_not_import_torch():
    code = "import sys, nncheck.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_collects_one_item_per_probe_with_stable_ids(pytester: pytest.Pytester, calls: Calls):
    project(pytester, good=GOOD, other=GOOD)
    pytester.makepyfile(test_plain="def test_ordinary():\n    assert True\n")
    result = pytester.runpytest("--co", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert {f"setups/good.py::nncheck::fake-{s}" for s in FAKE_STATUSES} <= set(ids)
    assert {f"setups/other.py::nncheck::fake-{s}" for s in FAKE_STATUSES} <= set(ids)
    assert "test_plain.py::test_ordinary" in ids
    assert len(ids) == 11
    assert calls.loads == []  # collection does not import setup files


def test_nncheck_paths_outside_testpaths_are_added(pytester: pytest.Pytester, calls: Calls):
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\nnncheck_paths = ["setups/*.py"]\n'
        '[tool.nncheck]\nonly = ["fake-pass"]\n'
    )
    pytester.mkdir("setups").joinpath("good.py").write_text(GOOD)
    pytester.mkdir("tests").joinpath("test_a.py").write_text("def test_a():\n    pass\n")
    ids = pytester.runpytest("--co", "-q").outlines
    assert "tests/test_a.py::test_a" in ids and "setups/good.py::nncheck::fake-pass" in ids
    ids = pytester.runpytest("--co", "-q", "tests").outlines  # explicit paths: only those
    assert "tests/test_a.py::test_a" in ids and not any("nncheck" in i for i in ids)


def test_no_collection_without_opt_in(pytester: pytest.Pytester, calls: Calls):
    pytester.mkdir("setups")
    pytester.path.joinpath("setups", "good.py").write_text(GOOD)
    result = pytester.runpytest("--co", "-q", "setups")
    assert "nncheck" not in result.stdout.str()


def test_outcome_mapping_and_failure_text(pytester: pytest.Pytester, calls: Calls):
    project(pytester)
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=2, failed=2, skipped=1, warnings=1)
    out = result.stdout.str()
    # failures carry message, numbers and hint, and no nncheck-internal traceback
    assert "nncheck fake-fail: FAIL: fake fail message" in out
    assert "measured: fake_value=1.5" in out and "expected: fake_max=1" in out
    assert "fix: apply the fake-fail fix" in out
    assert "RuntimeError: fake probe crashed" in out  # a probe outside nncheck reads as user code
    assert "Traceback" not in out and "nncheck/pytest_plugin.py" not in out and "nncheck/runner.py" not in out
    # skip carries the reason; warn is a warning in the summary, pointing at the setup file
    assert "SKIPPED" in out and "fake skip message" in out
    assert "NncheckWarning" in out and "fake warn message" in out and "setups/good.py" in out
    # the setup was loaded once and every probe ran once
    assert len(calls.loads) == 1
    assert sorted(calls.ran) == sorted(f"fake-{s}" for s in FAKE_STATUSES)


def test_strict_turns_warnings_into_failures(pytester: pytest.Pytester, calls: Calls):
    project(pytester, only=("pass", "warn"))
    pytester.runpytest().assert_outcomes(passed=2, warnings=1)
    result = pytester.runpytest("--nncheck-strict")
    result.assert_outcomes(passed=1, failed=1)
    assert "fails under strict mode" in result.stdout.str()


def test_strict_from_pyproject(pytester: pytest.Pytester, calls: Calls):
    project(pytester, only=("pass", "warn"), extra="strict = true")
    pytester.runpytest().assert_outcomes(passed=1, failed=1)


def test_k_runs_only_the_selected_probe_and_loads_once(pytester: pytest.Pytester, calls: Calls):
    project(pytester, good=GOOD, other=GOOD)
    result = pytester.runpytest("-k", "fake-fail and good")
    result.assert_outcomes(failed=1, deselected=9)
    assert calls.ran == ["fake-fail"]
    assert len(calls.loads) == 1


def test_exitfirst_stops_the_battery(pytester: pytest.Pytester, calls: Calls):
    project(pytester)
    pytester.runpytest("-x").assert_outcomes(passed=2, failed=1)
    assert calls.ran == ["fake-pass", "fake-warn", "fake-fail"]


def test_last_failed_reruns_only_failures(pytester: pytest.Pytester, calls: Calls):
    project(pytester)
    pytester.runpytest().assert_outcomes(passed=2, failed=2, skipped=1, warnings=1)
    calls.ran.clear()
    result = pytester.runpytest("--lf")
    result.assert_outcomes(failed=2, deselected=3)
    assert sorted(calls.ran) == ["fake-error", "fake-fail"]


def test_junitxml_has_one_testcase_per_probe(pytester: pytest.Pytester, calls: Calls):
    project(pytester)
    pytester.runpytest("--junitxml=out.xml")
    root = ET.parse(pytester.path / "out.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {f"fake-{s}" for s in FAKE_STATUSES}
    assert all(c.get("classname") == "setups.good.nncheck" for c in cases.values())
    failure = cases["fake-fail"].find("failure")
    assert failure is not None and "apply the fake-fail fix" in (failure.text or "") + failure.get("message", "")
    assert cases["fake-skip"].find("skipped") is not None
    assert cases["fake-pass"].find("failure") is None and cases["fake-warn"].find("failure") is None


def test_options_pass_through_to_the_config(pytester: pytest.Pytester, calls: Calls, monkeypatch: pytest.MonkeyPatch):
    seen: list[tuple[int, str, str]] = []

    def spy(ctx, params):
        seen.append((ctx.seed, str(ctx.device), ctx.budget))
        return Result(Status.PASS, "ok")

    monkeypatch.setitem(probes_pkg._REGISTRY, "spy", Probe("spy", "Spy", spy, order=2000))
    project(pytester, only=("spy",))
    pytester.runpytest("--nncheck-seed", "7", "--nncheck-budget", "fast", "--nncheck-device", "cpu").assert_outcomes(
        passed=1
    )
    assert seen == [(7, "cpu", "fast")]


def test_precedence_pyproject_setup_file_options(pytester: pytest.Pytester, calls: Calls, monkeypatch):
    seeds: list[int] = []

    def spy(ctx, params):
        seeds.append(ctx.seed)
        return Result(Status.PASS, "ok")

    monkeypatch.setitem(probes_pkg._REGISTRY, "spy", Probe("spy", "Spy", spy, order=2000))
    project(pytester, only=("spy",), extra="seed = 3", good=GOOD, own=GOOD + "\nnncheck = {'seed': 5}\n")
    pytester.runpytest().assert_outcomes(passed=2)
    pytester.runpytest("--nncheck-seed", "7").assert_outcomes(passed=2)
    assert sorted(seeds[:2]) == [3, 5] and seeds[2:] == [7, 7]


def test_setup_file_settings_turn_a_probe_off(pytester: pytest.Pytester, calls: Calls):
    project(pytester, only=("pass", "fail"), good=GOOD + '\nnncheck = {"skip": ["fake-fail"]}\n')
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    assert "turned off by the `nncheck` settings" in result.stdout.str()
    assert calls.ran == ["fake-pass"]


def test_broken_setup_fails_with_its_hint(pytester: pytest.Pytester):
    project(pytester, only=("initial-loss",), good=GOOD, hot=HOT_LOGITS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "FAILED setups/hot.py::nncheck::initial-loss" in out
    assert "weight.mul_(0.01)" in out and "measured: L0=" in out


def test_setup_error_fails_every_item_once_loaded(pytester: pytest.Pytester, calls: Calls):
    project(pytester, only=("pass", "fail"), bad="import torch\n\ndef model():\n    return torch.nn.Linear(2, 2)\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    assert "defines no `data`" in result.stdout.str()
    assert len(calls.loads) == 1 and calls.ran == []


def test_config_error_names_the_nearest_key(pytester: pytest.Pytester, calls: Calls):
    project(pytester, extra="sed = 3")
    result = pytester.runpytest()
    assert result.ret != 0
    assert "unknown key `sed`" in result.stdout.str() and "Did you mean `seed`?" in result.stdout.str()


def test_explicit_file_with_nncheck_flag(pytester: pytest.Pytester, calls: Calls):
    pytester.makepyprojecttoml('[tool.nncheck]\nonly = ["fake-pass"]\n')
    pytester.path.joinpath("mysetup.py").write_text(GOOD)
    result = pytester.runpytest("--nncheck", "mysetup.py", "-v")
    result.assert_outcomes(passed=1)
    assert "mysetup.py::nncheck::fake-pass PASSED" in result.stdout.str()
    assert "mysetup.py" in pytester.runpytest("--co", "-q", "--nncheck", ".").stdout.str()
    assert "mysetup.py" not in pytester.runpytest("--co", "-q", ".").stdout.str()
    # a test module named on the command line stays a test module
    pytester.makepyfile(test_mod="def test_it():\n    pass\n")
    ids = pytester.runpytest("--co", "-q", "--nncheck", "mysetup.py", "test_mod.py").outlines
    assert "test_mod.py::test_it" in ids and "mysetup.py::nncheck::fake-pass" in ids


def test_only_option(pytester: pytest.Pytester, calls: Calls):
    project(pytester)
    pytester.runpytest("--nncheck-only", "fake-pass").assert_outcomes(passed=1)
    result = pytester.runpytest("--nncheck-only", "fake-pas")
    assert result.ret != 0 and "Did you mean `fake-pass`?" in result.stdout.str()


FIXTURE_TESTS = f"""
import torch
from torch import nn
{GOOD.replace("def model", "def make_model").replace("def data", "def make_data")}

def test_fixture_passes(nncheck):
    report = nncheck.check(model=make_model, data=make_data, only=["fake-pass", "fake-warn"])
    assert [r.id for r in report.results] == ["fake-pass", "fake-warn"]

def test_fixture_fails(nncheck):
    nncheck.check(model=make_model, data=make_data, only=["fake-pass", "fake-fail"])

def test_fixture_setup_error(nncheck):
    nncheck.check(model=make_model, data=None, only=["fake-pass"])
"""


def test_fixture(pytester: pytest.Pytester, calls: Calls):
    pytester.makepyfile(test_fix=FIXTURE_TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2, warnings=1)
    out = result.stdout.str()
    assert "nncheck found problems" in out and "fake fail message" in out and "apply the fake-fail fix" in out
    assert "nncheck could not run the setup" in out and "no `data` given" in out


def test_xdist_loadgroup_keeps_verdicts(pytester: pytest.Pytester):
    pytest.importorskip("xdist")
    project(pytester, only=("initial-loss",), good=GOOD, hot=HOT_LOGITS)
    result = pytester.runpytest("-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-p", "no:benchmark")
    result.assert_outcomes(passed=1, failed=1)


def test_junit_classnames_match_the_cli(pytester: pytest.Pytester):
    """CI reporters group the CLI's JUnit and pytest's the same way (issue 13: `x.mlp` vs `x.mlp.nncheck`)."""
    from click.testing import CliRunner

    from nncheck.cli import main

    project(pytester, only=("initial-loss",))
    pytester.runpytest("--junitxml=py.xml").assert_outcomes(passed=1)
    res = CliRunner().invoke(main, ["run", "setups/good.py", "--only", "initial-loss", "-f", "junit", "-o", "cli.xml"])
    assert res.exit_code == 0, res.output

    def cases(name: str) -> set[tuple[str | None, str | None]]:
        root = ET.parse(pytester.path / name).getroot()
        return {(c.get("classname"), c.get("name")) for c in root.iter("testcase")}

    assert cases("py.xml") == cases("cli.xml") == {("setups.good.nncheck", "initial-loss")}


def test_a_hung_setup_fails_its_items_with_the_phase_and_line(pytester: pytest.Pytester):
    """In pytest's process the import and the preflight run under a deadline user code cannot swallow."""
    hook = "\n\nimport threading\n_model = model\n\ndef model():\n    net = _model()\n"
    hook += "    net.register_forward_pre_hook(lambda m, a: threading.Event().wait())\n    return net\n"
    project(pytester, only=("initial-loss", "data"), hung=GOOD + hook)
    t0 = time.perf_counter()
    result = pytester.runpytest("--nncheck-time-budget", "1")
    assert time.perf_counter() - t0 < 30
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "stopped after 1.0 s in the preflight" in out and "threading.Event().wait()" in out
    assert "Traceback" not in out
