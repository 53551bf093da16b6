"""JUnit XML for CI systems (GitHub test reporters, GitLab, Jenkins, Azure): one testcase per probe.

Shape (the de-facto schema that pytest's ``--junitxml`` also writes)::

    <testsuites name="nncheck" tests= failures= errors= skipped= time=>
      <testsuite name="examples/mlp.py" ...>              one per setup file
        <properties> seed, device, budget, step time, step equivalents </properties>
        <testcase classname="examples.mlp.nncheck" name="overfit-batch" file="examples/mlp.py" time="1.100">
          <failure message="one line" type="fail">message, measured, expected, fix</failure>   fail
          <error message=... type="error">...</error>                                          error
          <skipped message="why"/>                                                             skip
          <system-out>WARN: ...</system-out>                       warn (a <failure type="warn"> under strict)
        </testcase>

A setup that could not be loaded is a testsuite with one ``setup`` testcase carrying an ``<error type="setup">``; a
setup that was stopped (a hung phase, a worker that died) keeps the testcases of the probes that finished and adds
that ``setup`` testcase with an ``<error type="stopped">``. The classname is pytest's for the same setup file
(``examples.mlp.nncheck``), so the CLI's and pytest's reports group alike.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from nncheck.render import result_lines

if TYPE_CHECKING:
    from nncheck.report import Report, Result, SetupReport

# The collector of a setup file's probes in the pytest plugin (its node id is `<file>::nncheck::<probe>`).
BATTERY = "nncheck"
# Characters XML 1.0 forbids (control characters other than tab, newline, carriage return).
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def clean(text: str) -> str:
    return _ILLEGAL_XML.sub("\ufffd", text)


def classname(path: str) -> str:
    """``examples/mlp.py`` -> ``examples.mlp.nncheck``: what pytest's ``--junitxml`` writes for the plugin's items
    (``examples/mlp.py::nncheck::<probe>``), so that CI reporters group the CLI's and pytest's results the same way."""
    stem = path[:-3] if path.endswith(".py") else path
    return ".".join([*(p for p in re.split(r"[\\/]+", stem) if p not in ("", ".", "..")), BATTERY])


def details(r: Result) -> str:
    """The body of a failure: message, numbers, hint, notes."""
    return "\n".join(result_lines(r, limit=10))


def _testcase(parent: ET.Element, s: SetupReport, r: Result, strict: bool) -> str:
    """Append one testcase; return its outcome: passed, failure, error or skipped."""
    case = ET.SubElement(
        parent,
        "testcase",
        classname=classname(s.path),
        name=r.id,
        file=s.path,
        time=f"{r.duration_s:.3f}",
    )
    status = r.status.value
    if status == "fail" or (status == "warn" and strict):
        el = ET.SubElement(case, "failure", message=clean(r.message), type=status)
        el.text = clean(details(r))
        return "failure"
    if status == "error":
        el = ET.SubElement(case, "error", message=clean(r.message), type="error")
        el.text = clean(details(r))
        return "error"
    if status == "skip":
        ET.SubElement(case, "skipped", message=clean(r.message), type="skip")
        return "skipped"
    if status == "warn":
        ET.SubElement(case, "system-out").text = clean("WARN: " + details(r))
    return "passed"


def _suite(root: ET.Element, s: SetupReport, strict: bool) -> dict[str, int]:
    suite = ET.SubElement(root, "testsuite", name=s.path)
    props = ET.SubElement(suite, "properties")
    se = s.step_equivalents
    for key, value in (
        ("seed", s.seed),
        ("device", s.device),
        ("budget", s.budget),
        ("step_time_s", None if s.step_time_s is None else round(s.step_time_s, 6)),
        ("step_equivalents", None if se is None else round(se, 1)),
    ):
        if value is not None:
            ET.SubElement(props, "property", name=key, value=str(value))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for r in s.results:
        outcome = _testcase(suite, s, r, strict)
        counts["tests"] += 1
        if outcome == "failure":
            counts["failures"] += 1
        elif outcome == "error":
            counts["errors"] += 1
        elif outcome == "skipped":
            counts["skipped"] += 1
    if s.error is not None:  # after the probes that finished (a stopped setup keeps them)
        case = ET.SubElement(suite, "testcase", classname=classname(s.path), name="setup", file=s.path, time="0.000")
        first = s.error.splitlines()[0] if s.error else "setup error"
        el = ET.SubElement(case, "error", message=clean(first), type="stopped" if s.stopped else "setup")
        el.text = clean(s.error)
        counts["tests"] += 1
        counts["errors"] += 1
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", str(counts["errors"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{s.duration_s:.3f}")
    return counts


def render(report: Report, **options: Any) -> str:
    root = ET.Element("testsuites", name="nncheck")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in report.setups:
        for k, v in _suite(root, s, report.strict or s.strict).items():
            total[k] += v
    for k, v in total.items():
        root.set(k, str(v))
    root.set("time", f"{sum(s.duration_s for s in report.setups):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
