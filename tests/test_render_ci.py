"""CI renderers: JUnit XML (one testcase per probe) and GitHub workflow commands + job summary."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nncheck.render import render
from nncheck.render.github_format import command, escape_data, escape_property, summary_markdown
from nncheck.render.junit_format import classname
from nncheck.report import Report, Result, SetupReport, Status


def result(pid: str, status: str, message: str = "", hint: str = "") -> Result:
    return Result(
        Status(status),
        message or f"{pid} says {status}",
        measured={"loss": 2.5, "steps": 300},
        expected={"loss_max": 0.1},
        hint=hint or (f"fix {pid}: `model.head.weight.mul_(0.01)`" if status != "pass" else ""),
        id=pid,
        title=pid.title(),
        duration_s=0.25,
    )


def sample_report(path: str = "examples/mlp.py", strict: bool = False) -> Report:
    sr = SetupReport(
        path=path,
        results=[
            result("initial-loss", "pass"),
            result("overfit-batch", "fail", message="loss 2.5 after 300 steps: 50% of the batch, 1: 2, a,b"),
            result("learning-rate", "warn"),
            result("layer-order", "skip", message="no BatchNorm / Dropout in the model"),
            result("numerics", "error", message="probe crashed: ValueError: boom"),
        ],
        duration_s=1.5,
        step_time_s=0.002,
        steps=750.0,
    )
    broken = SetupReport(path="checks/broken.py", error="checks/broken.py: defines no `data`.\nNames found: model")
    return Report([sr, broken], strict=strict)


# ---------------------------------------------------------------------------------------------- JUnit
def parse_junit(report: Report) -> ET.Element:
    return ET.fromstring(render(report, "junit").encode("utf-8"))


def test_junit_one_testcase_per_probe_and_a_suite_per_setup():
    root = parse_junit(sample_report())
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["examples/mlp.py", "checks/broken.py"]
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == [
        "initial-loss",
        "overfit-batch",
        "learning-rate",
        "layer-order",
        "numerics",
    ]
    assert all(c.get("classname") == "examples.mlp.nncheck" and c.get("file") == "examples/mlp.py" for c in cases)
    assert cases[0].get("time") == "0.250"
    s = suites[0]
    assert (s.get("tests"), s.get("failures"), s.get("errors"), s.get("skipped")) == ("5", "1", "1", "1")
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("6", "1", "2", "1")
    props = {p.get("name"): p.get("value") for p in s.iter("property")}
    assert props["step_equivalents"] == "750.0" and props["budget"] == "full"


def test_junit_failure_text_has_message_numbers_and_hint():
    root = parse_junit(sample_report())
    case = root.find(".//testcase[@name='overfit-batch']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "fail"
    assert failure.get("message") == "loss 2.5 after 300 steps: 50% of the batch, 1: 2, a,b"
    text = failure.text or ""
    assert "measured: loss=2.5, steps=300" in text and "expected: loss_max=0.1" in text
    assert "fix: fix overfit-batch: `model.head.weight.mul_(0.01)`" in text
    skipped = root.find(".//testcase[@name='layer-order']/skipped")
    assert skipped is not None and skipped.get("message") == "no BatchNorm / Dropout in the model"
    assert root.find(".//testcase[@name='numerics']/error") is not None
    warn = root.find(".//testcase[@name='learning-rate']")
    assert warn is not None and warn.find("failure") is None and "WARN" in (warn.findtext("system-out") or "")


def test_junit_setup_error_is_an_error_testcase():
    root = parse_junit(sample_report())
    suite = root.findall("testsuite")[1]
    (case,) = suite.findall("testcase")
    err = case.find("error")
    assert case.get("name") == "setup" and err is not None and err.get("type") == "setup"
    assert err.get("message") == "checks/broken.py: defines no `data`." and "Names found" in (err.text or "")


def test_junit_strict_turns_warn_into_failure():
    root = parse_junit(sample_report(strict=True))
    failure = root.find(".//testcase[@name='learning-rate']/failure")
    assert failure is not None and failure.get("type") == "warn"
    assert root.findall("testsuite")[0].get("failures") == "2"


def test_junit_survives_control_characters_and_markup():
    sr = SetupReport(path="a&b/<m>.py", results=[result("overfit-batch", "fail", message="bad \x00\x1b[31m <x> & ]]>")])
    root = parse_junit(Report([sr]))
    assert "<x> & ]]>" in (root.find(".//failure").get("message") or "")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("examples/mlp.py", "examples.mlp.nncheck"),
        ("./checks/x.py", "checks.x.nncheck"),
        ("C:\\a\\b.py", "C:.a.b.nncheck"),
        ("m.py", "m.nncheck"),
    ],
)
def test_classname(path, expected):
    """pytest's classname for the plugin's items of the same file (tests/test_hostile.py compares the two outputs)."""
    assert classname(path) == expected


# ---------------------------------------------------------------------------------------------- GitHub
# A workflow command: ::name key=value,key=value::message, on one line; values hold no raw ':' ',' or newline.
COMMAND = re.compile(r"^::(error|warning|notice|group|endgroup)( [a-z]+=[^,:\n\r]*(,[a-z]+=[^,:\n\r]*)*)?::[^\n\r]*$")


ESCAPES = {"%25": "%", "%0D": "\r", "%0A": "\n", "%3A": ":", "%2C": ","}


def unescape(text: str) -> str:
    return re.sub("%25|%0D|%0A|%3A|%2C", lambda m: ESCAPES[m.group(0)], text)


def github_lines(report: Report, tmp_path: Path) -> list[str]:
    return render(report, "github", step_summary=False).splitlines()


def test_github_annotations_follow_the_workflow_command_syntax(tmp_path):
    lines = github_lines(sample_report(), tmp_path)
    commands = [ln for ln in lines if ln.startswith("::")]
    assert commands and all(COMMAND.match(ln) for ln in commands), commands
    errors = [ln for ln in commands if ln.startswith("::error ")]
    titles = [re.search(r"title=([^,:]*)", ln).group(1) for ln in errors]  # type: ignore[union-attr]
    assert titles == ["nncheck overfit-batch", "nncheck numerics (error)", "nncheck setup error"]
    (fail,) = [ln for ln in errors if "title=nncheck overfit-batch" in ln]
    assert fail.startswith("::error file=examples/mlp.py,")
    message = unescape(fail.split("::", 2)[2])
    assert message.startswith("loss 2.5 after 300 steps: 50% of the batch, 1: 2, a,b\nmeasured: loss=2.5")
    assert "fix: fix overfit-batch" in message
    warnings = [ln for ln in commands if ln.startswith("::warning ")]
    assert len(warnings) == 1 and "title=nncheck learning-rate" in warnings[0]
    assert "::group::nncheck examples/mlp.py" in lines and "::endgroup::" in lines


def test_github_strict_makes_warnings_errors(tmp_path):
    lines = github_lines(sample_report(strict=True), tmp_path)
    assert not any(ln.startswith("::warning") for ln in lines)
    assert any(ln.startswith("::error") and "title=nncheck learning-rate" in ln for ln in lines)


def test_github_annotation_points_at_the_model_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("setup.py").write_text('"""doc"""\nimport torch\n\n\ndef model():\n    return torch.nn.Linear(2, 2)\n')
    report = Report([SetupReport(path="setup.py", results=[result("overfit-batch", "fail")])])
    (line,) = [ln for ln in github_lines(report, tmp_path) if ln.startswith("::error")]
    assert line.startswith("::error file=setup.py,line=5,title=nncheck overfit-batch::")


def test_github_step_summary_is_appended_when_set(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    render(sample_report(), "github")
    text = summary.read_text()
    assert text.startswith("earlier step\n## nncheck: ❌ NOT OK")
    assert "| Probe | Status | Result | Fix |" in text
    assert "| `overfit-batch` | ❌ fail |" in text and "**Setup error:**" in text
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    render(sample_report(), "github")
    assert summary.read_text() == text


def test_summary_escapes_table_cells():
    sr = SetupReport(path="m.py", results=[result("overfit-batch", "fail", message="a | b\nc", hint="x|y")])
    md = summary_markdown(Report([sr]))
    assert "a \\| b<br>c" in md and "x\\|y" in md


@given(st.text())
def test_escaping_round_trips_and_leaves_no_separators(text):
    prop = escape_property(text)
    data = escape_data(text)
    assert unescape(prop) == text and unescape(data) == text
    assert not set(prop) & {":", ",", "\n", "\r"}
    assert not set(data) & {"\n", "\r"}


def test_command_skips_missing_properties():
    assert command("warning", "50%\ndone", file="a,b:c.py", line=None) == "::warning file=a%2Cb%3Ac.py::50%25%0Adone"
    assert command("endgroup", "") == "::endgroup::"
