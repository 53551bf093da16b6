"""Report model and JSON renderer: exactly the shape the README documents."""

from __future__ import annotations

import json
import math

import torch

from nncheck.render import render
from nncheck.report import Report, Result, SetupReport, Status, jsonable


def sample_report() -> Report:
    r1 = Result(Status.PASS, "fine", measured={"L0": 1.6}, expected={"L0_max": 2.0}, id="initial-loss", title="t")
    r2 = Result(
        Status.FAIL,
        "cannot memorise",
        measured={"final_loss": torch.tensor(0.9), "curve": [1.0, math.nan]},
        expected={"final_loss_max": 0.05},
        hint="fix it",
        series={"loss": {"curves": {"you": {"x": [0, 1], "y": [1.0, 0.9]}}}},
        id="overfit-batch",
        title="t2",
        duration_s=1.25,
    )
    return Report([SetupReport("model.py", [r1, r2], duration_s=3.2, step_time_s=0.004, steps=120.0)])


def test_json_shape():
    d = json.loads(render(sample_report(), "json"))
    assert set(d) == {"nncheck_version", "schema", "setups"}
    assert d["schema"] == 1
    s = d["setups"][0]
    assert s["path"] == "model.py" and s["ok"] is False
    assert s["duration_s"] == 3.2 and s["step_time_s"] == 0.004
    assert s["step_equivalents"] == 120.0 and s["wall_step_equivalents"] == 800.0
    r = s["results"][1]
    for key in ("id", "status", "message", "measured", "expected", "hint", "duration_s"):
        assert key in r
    assert r["status"] == "fail" and r["measured"]["final_loss"] == 0.8999999761581421
    assert r["measured"]["curve"] == [1.0, "nan"]
    assert r["series"]["loss"]["curves"]["you"]["y"] == [1.0, 0.9]


def test_exit_codes_and_strict():
    rep = sample_report()
    assert rep.exit_code() == 1
    warn_only = Report([SetupReport("a.py", [Result(Status.WARN, "hmm", id="x")])])
    assert warn_only.exit_code() == 0
    warn_only.strict = True
    assert warn_only.exit_code() == 1
    broken = Report([SetupReport("a.py", error="no model")])
    assert broken.exit_code() == 2


def test_jsonable():
    assert jsonable({"a": (1, 2.5, float("inf"))}) == {"a": [1, 2.5, "inf"]}
    assert jsonable(torch.tensor([1.0, 2.0])) == [1.0, 2.0]
    assert jsonable(Status.WARN) == "warn"


def test_text_report_shows_hint_and_summary():
    out = render(sample_report(), "text")
    assert "FAIL" in out and "overfit-batch" in out and "fix: fix it" in out
    assert "1 pass, 1 fail" in out and "120 training steps run" in out


def test_str_and_repr_are_readable_not_a_dump():
    """`assert report.ok, report`: Python shows str(report), pytest the repr (cut at 240 characters): both short,
    verdict first, the failing probes by name (issue 13: it was a 31 KB dataclass dump)."""
    rep = sample_report()
    rep.setups[0].results[1].series = {"loss": {"curves": {"you": {"x": list(range(500)), "y": [1.0] * 500}}}}
    text = str(rep)
    assert text.splitlines()[0] == "nncheck: NOT OK (1 setup)"
    assert "model.py: NOT OK: 1 pass, 1 fail in 3.2 s" in text
    assert "FAIL  overfit-batch: cannot memorise" in text and "fix: fix it" in text
    assert "initial-loss" not in text  # passes are counted, not listed
    assert len(text) < 400
    r = repr(rep)
    assert r.startswith("Report(NOT OK: 'model.py': not ok; fail overfit-batch") and "\n" not in r and len(r) < 240
    assert repr(rep.setups[0].results[1]).startswith("Result(fail overfit-batch: 'cannot memorise")


def test_stopped_setup_exit_code_and_json():
    stopped = {"phase": "preflight", "probe": None, "after_s": 2.0, "limit_s": 2.0, "how": "timeout", "where": "x.py:3"}
    s = SetupReport("x.py", error="x.py: stopped after 2.0 s", stopped=stopped, notes=["a note"])
    rep = Report([s, SetupReport("y.py", error="no data"), *sample_report().setups])
    assert [x.exit_code() for x in rep.setups] == [3, 2, 1] and rep.exit_code() == 3
    d = json.loads(render(rep, "json"))["setups"][0]
    assert d["stopped"] == stopped and d["error"].startswith("x.py: stopped") and d["notes"] == ["a note"]
    assert not d["ok"]
    assert "STOPPED" in render(rep, "text") and "note: a note" in render(rep, "text")
    assert Report().exit_code() == 0
