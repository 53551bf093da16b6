"""The command line: exit codes 0 / 1 / 2, --only / --skip validation, several --format / -o pairs, strict,
explain / list, and `nncheck --help` staying free of torch.

Verdict-dependent cases use fake probes (monkeypatched into the registry) or the core `initial-loss` probe on a
tiny setup whose logits are scaled x50 at init.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from nncheck import registry as probes_pkg
from nncheck.cli import main
from nncheck.registry import Probe
from nncheck.report import Result, Status

GOOD = """
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x[:, :3].argmax(dim=1)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
"""

HOT = (
    GOOD.replace("return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))", "return Hot()")
    + """
class Hot(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x) * 50
"""
)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (cwd) with good.py, hot.py, nodata.py and an empty pyproject.toml."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "hot.py").write_text(HOT)
    (tmp_path / "nodata.py").write_text("import torch\n\ndef model():\n    return torch.nn.Linear(2, 2)\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_warn(monkeypatch: pytest.MonkeyPatch) -> str:
    probes_pkg.registry()

    def fn(ctx, params):
        return Result(Status.WARN, "fake warning", measured={"v": 2.0}, expected={"v_max": 1.0}, hint="do X")

    monkeypatch.setitem(probes_pkg._REGISTRY, "fake-warn", Probe("fake-warn", "Fake warn", fn, order=1000))
    return "fake-warn"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_exit_0_when_no_probe_fails(files):
    res = invoke("run", "good.py", "--only", "initial-loss")
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "initial-loss" in res.output


def test_exit_1_when_a_probe_fails_with_its_hint(files):
    res = invoke("run", "good.py", "hot.py", "--only", "initial-loss")
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "weight.mul_(0.01)" in res.output


def test_warnings_pass_unless_strict(files, fake_warn):
    # a fake probe exists in this process only: run the setups here, not in a worker process
    assert invoke("run", "good.py", "--only", fake_warn, "--in-process").exit_code == 0
    assert invoke("run", "good.py", "--only", fake_warn, "--strict", "--in-process").exit_code == 1
    (files / "pyproject.toml").write_text("[tool.nncheck]\nstrict = true\n")
    assert invoke("run", "good.py", "--only", fake_warn, "--in-process").exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "no such file"),
        (["run", "nodata.py", "--only", "initial-loss"], "defines no `data`"),
        (["run", "."], "defines no `data`"),  # a folder runs its setup files; nodata.py is unusable
    ],
)
def test_exit_2_for_unusable_setups(files, args, message):
    res = invoke(*args)
    assert res.exit_code == 2 and message in res.output


def test_setup_error_does_not_hide_other_results(files):
    res = invoke("run", "good.py", "nodata.py", "--only", "initial-loss", "-f", "json")
    assert res.exit_code == 2
    doc = json.loads(res.stdout)  # progress lines go to stderr
    assert [s["path"] for s in doc["setups"]] == ["good.py", "nodata.py"]
    assert doc["setups"][0]["ok"] and "error" in doc["setups"][1]


@pytest.mark.parametrize("option", ["--only", "--skip"])
def test_unknown_probe_id_is_a_usage_error_listing_the_valid_ids(files, option):
    res = invoke("run", "good.py", option, "initial-los")
    assert res.exit_code == 2
    assert "unknown probe id `initial-los`" in res.output and "Did you mean `initial-loss`?" in res.output
    assert "Valid ids: " in res.output and "initial-loss" in res.output.split("Valid ids: ")[1]
    assert "SETUP ERROR" not in res.output  # rejected before any setup is loaded


def test_config_error_exits_2_naming_the_nearest_key(files):
    (files / "pyproject.toml").write_text("[tool.nncheck]\nsede = 1\n")
    res = invoke("run", "good.py")
    out = " ".join(res.output.split())  # the report wraps long messages
    assert res.exit_code == 2 and "unknown key `sede`" in out and "Did you mean `seed`?" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "a.xml", "-o", "b.xml", "-f", "junit"], "more --output paths than --format values"),
        (["-f", "text", "-f", "json"], "only one format can go to stdout"),
        (["-f", "yaml"], "Invalid value"),
        (["--budget", "slow"], "Invalid value"),
    ],
)
def test_bad_command_lines_exit_2(files, args, message):
    res = invoke("run", "good.py", "--only", "initial-loss", *args)
    assert res.exit_code == 2 and message in res.output


def test_several_format_output_pairs_in_one_run(files, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    res = invoke(
        "run",
        "good.py",
        "hot.py",
        "--only",
        "initial-loss",
        "-f",
        "text",
        "-f",
        "junit",
        "-o",
        "-",
        "-o",
        "report.xml",
        "-f",
        "json",
        "-o",
        "report.json",
        "-f",
        "github",
        "-o",
        "annotations.txt",
    )
    assert res.exit_code == 1
    assert "hot.py" in res.output and "FAIL" in res.output  # text went to stdout
    root = ET.parse(files / "report.xml").getroot()
    assert [c.get("name") for c in root.iter("testcase")] == ["initial-loss", "initial-loss"]
    assert root.get("failures") == "1"
    doc = json.loads((files / "report.json").read_text())
    assert doc["schema"] == 1 and [s["ok"] for s in doc["setups"]] == [True, False]
    annotations = (files / "annotations.txt").read_text().splitlines()
    assert any(ln.startswith("::error file=hot.py,") and "title=nncheck initial-loss::" in ln for ln in annotations)


def test_default_format_is_text_on_stdout(files):
    res = invoke("run", "good.py", "--only", "initial-loss", "-o", "out.txt")
    assert res.exit_code == 0 and res.stdout == ""
    assert "initial-loss" in (files / "out.txt").read_text()
    assert "wrote the text report to out.txt" in res.stderr


def test_list_and_explain():
    res = invoke("list")
    assert res.exit_code == 0
    assert any(line.startswith("initial-loss ") for line in res.output.splitlines())
    res = invoke("explain", "initial-loss")
    assert res.exit_code == 0
    for part in ("What it does", "Why is this bad?", "Thresholds", "How to fix", "[tool.nncheck.probes.initial-loss]"):
        assert part in res.output
    assert "(--budget fast: 2)" in res.output
    res = invoke("explain", "overfit")
    assert res.exit_code == 2 and "unknown probe id `overfit`" in res.output and "Valid ids:" in res.output


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and "version" in res.output


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["list", "--help"]])
def test_help_does_not_import_torch(args):
    code = (
        "import sys\nfrom nncheck.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO TORCH")
    assert "Usage:" in out


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda:7"])
def test_unavailable_device_exits_2_without_traceback(files, device):
    if device.startswith("cuda") and torch_cuda_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    res = invoke("run", "good.py", "--only", "initial-loss", "--device", device)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and device in res.output


def test_device_in_the_setup_file_is_validated(files):
    (files / "gpu.py").write_text(GOOD + "\nnncheck = {'device': 'mps'}\n")
    res = invoke("run", "gpu.py", "--only", "initial-loss")
    assert res.exit_code == 2 and "not available" in res.output


def test_comma_separated_probe_ids(files):
    res = invoke("run", "good.py", "--only", "initial-loss,data", "-f", "json")
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)["setups"][0]["results"]] == ["data", "initial-loss"]


def test_output_extension_picks_the_format(files):
    res = invoke("run", "good.py", "--only", "initial-loss", "-o", "out.json")
    assert res.exit_code == 0, res.output
    assert json.loads((files / "out.json").read_text())["schema"] == 1
    res = invoke("run", "good.py", "--only", "initial-loss", "-o", "out.weird")
    assert res.exit_code == 2 and "--format" in res.output


def torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_a_folder_runs_its_setup_files(files):
    (files / "sub").mkdir()
    (files / "sub" / "a.py").write_text(GOOD)
    (files / "sub" / "test_a.py").write_text(GOOD)  # a test module, not a setup file
    (files / "sub" / "helper.py").write_text("X = 1\n")
    res = invoke("run", "sub", "--only", "initial-loss", "-f", "json")
    assert res.exit_code == 0, res.output
    assert [s["path"] for s in json.loads(res.stdout)["setups"]] == [str(Path("sub") / "a.py")]
    (files / "empty").mkdir()
    res = invoke("run", "empty")
    assert res.exit_code == 2 and "no setup file" in res.output
