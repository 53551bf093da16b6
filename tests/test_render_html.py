"""HTML renderer: valid, self-contained HTML that embeds every plot; a clear ImportError without matplotlib."""

from __future__ import annotations

import base64
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nncheck.report import Report, Result, SetupReport, Status

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MLP = Path(__file__).resolve().parent.parent / "examples" / "mlp.py"


class Tree(HTMLParser):
    """Collects tags, attributes and text; records nesting errors (an end tag that closes nothing open)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(text: str) -> Tree:
    tree = Tree()
    tree.feed(text)
    tree.close()
    assert tree.doctype.lower() == "doctype html"
    assert not tree.errors, tree.errors
    assert not tree.stack, f"unclosed tags: {tree.stack}"
    return tree


def synthetic_report() -> Report:
    lr_sweep = {
        "title": "LR range test",
        "xlabel": "learning rate",
        "ylabel": "loss",
        "xscale": "log",
        "yscale": "linear",
        "kind": "line",
        "curves": {"loss": {"x": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "y": [2.3, 2.2, 1.5, math.nan, math.inf]}},
        "marks": {"your LR": 1e-3, "suggested": 3e-3},
    }
    overfit = {
        "title": "Loss on one batch",
        "xlabel": "step",
        "ylabel": "loss",
        "yscale": "log",
        "curves": {"your optimizer": {"x": [0, 1, 2], "y": [2.0, 1.0, 0.0]}, "Adam 3e-4": {"y": [2.0, 0.5, 0.1]}},
    }
    grads = {
        "title": "Gradient norm per layer",
        "xlabel": "layer",
        "ylabel": "|grad| / |w|",
        "kind": "bar",
        "yscale": "log",
        "curves": {"step 0": {"x": ["net.0", "net.2", "net.4"], "y": [1e-3, 1e-2, 0.0]}, "step 10": {"y": [1, 2, 3]}},
        "marks": {"dead": "net.2"},
    }
    results = [
        Result(Status.PASS, "fine", measured={"L0": 1.6}, expected={"L0_max": 2.0}, id="initial-loss", title="Loss"),
        Result(
            Status.FAIL,
            "cannot memorise <script>alert(1)</script>",
            measured={"final_loss": 0.9, "curve": [1.0, math.nan]},
            expected={"final_loss_max": 0.05},
            hint="with torch.no_grad(): model.head.bias.copy_(log_prior)  # see https://example.org/x",
            series={"loss": overfit},
            notes=["a note & more"],
            id="overfit-batch",
            title="Overfit one batch",
            duration_s=1.25,
        ),
        Result(Status.WARN, "LR high", series={"sweep": lr_sweep, "grads": grads}, id="learning-rate", title="LR"),
        Result(Status.SKIP, "no BatchNorm", id="eval-mode"),
        Result(Status.ERROR, "RuntimeError: boom", id="numerics"),
        Result(Status.PASS, "bad plot kept out", series={"broken": {"curves": [1, 2]}}, id="x"),
    ]
    return Report(
        [
            SetupReport("model.py", results, duration_s=3.2, step_time_s=0.004),
            SetupReport("broken.py", error="model() raised ValueError: <bad>"),
        ]
    )


def test_structure_and_every_plot_embedded():
    pytest.importorskip("matplotlib")
    from nncheck.render import render

    report = synthetic_report()
    tree = parse(render(report, "html"))
    assert len(tree.find("html")) == len(tree.find("head")) == len(tree.find("body")) == len(tree.find("title")) == 1
    assert len(tree.find("section")) == 2
    summary_rows = sum(len(s.results) for s in report.setups)
    assert len(tree.find("tr", **{"class": "fail"})) >= 1
    assert len(tree.find("details")) == summary_rows
    # every probe's details block is reachable from the summary table
    ids = {a.get("id") for _, a in tree.tags}
    links = [a["href"] for a in tree.find("a") if a.get("href", "").startswith("#p")]
    assert len(links) == summary_rows and all(h[1:] in ids for h in links)
    # one PNG per series entry that can be drawn (the malformed one becomes a message, not a crash)
    imgs = tree.find("img")
    assert len(imgs) == 3
    assert {a["alt"] for a in imgs} == {"LR range test", "Loss on one batch", "Gradient norm per layer"}
    for a in imgs:
        src = a["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    text = "".join(tree.text)
    assert "could not draw plot broken" in text
    assert "<script>alert(1)</script>" in text  # shown as text, escaped in the source
    assert not tree.find("script")
    assert "model() raised ValueError: <bad>" in text
    assert "with torch.no_grad(): model.head.bias.copy_(log_prior)" in text


def test_no_external_resources():
    pytest.importorskip("matplotlib")
    from nncheck.render import render

    tree = parse(render(synthetic_report(), "html"))
    for tag, attrs in tree.tags:
        for key in ("src", "href"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), f"<{tag} {key}={value[:40]}>"
        assert tag not in ("script", "link", "iframe"), tag


def test_real_report_embeds_each_series():
    pytest.importorskip("matplotlib")
    from helpers import run_file

    from nncheck.render import render

    sr = run_file(MLP, budget="fast")
    n_series = sum(len(r.series) for r in sr.results)
    tree = parse(render(Report([sr]), "html"))
    assert len(tree.find("img")) == n_series
    assert len(tree.find("details")) == len(sr.results)


def test_cli_writes_html(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from nncheck.cli import main

    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["run", str(MLP), "--only", "initial-loss", "-f", "html", "-o", str(out)])
    assert res.exit_code == 0, res.output
    parse(out.read_text(encoding="utf-8"))


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every `import matplotlib...` raise ImportError, as on a machine without the extra."""
    names = [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]
    for name in {*names, "matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"}:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_matplotlib_says_how_to_install(no_matplotlib: None):
    from nncheck.render import render

    with pytest.raises(ImportError, match=r'pip install "nncheck\[html\]"'):
        render(synthetic_report(), "html")


def test_cli_without_matplotlib_exits_2(no_matplotlib: None, tmp_path: Path):
    from nncheck.cli import main

    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["run", str(MLP), "--only", "initial-loss", "-f", "html", "-o", str(out)])
    assert res.exit_code == 2
    assert 'pip install "nncheck[html]"' in res.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- read top-down
def test_problems_first_and_passes_collapsed():
    pytest.importorskip("matplotlib")
    from nncheck.render import render

    text = render(synthetic_report(), "html")
    tree = parse(text)
    details = tree.find("details")
    statuses = [(a.get("class") or "").split()[-1] for a in details]
    first_pass = next(i for i, s in enumerate(statuses) if s in ("pass", "skip"))
    assert statuses[:first_pass] == ["fail", "warn", "error"]  # in battery order among the problems
    assert all(s in ("pass", "skip") for s in statuses[first_pass:])
    for a, s in zip(details, statuses):
        assert ("open" in a) == (s in ("fail", "error", "warn")), (s, a)
    # the summary table lists them in the same order
    start = next(i for i, (t, a) in enumerate(tree.tags) if t == "table" and a.get("class") == "summary")
    rows = [a.get("class") for t, a in tree.tags[start:] if t == "tr" and a.get("class")]
    assert rows[: len(statuses)] == statuses
    # and a failing setup comes before a passing one
    ok_first = Report([SetupReport("ok.py", [Result(Status.PASS, "fine", id="x")]), *synthetic_report().setups[:1]])
    sections = [a.get("id") for a in parse(render(ok_first, "html")).find("section")]
    assert sections == ["setup-1", "setup-0"]


def test_a_few_spikes_do_not_set_the_axis():
    from nncheck.render.html_format import spike_limit

    flat_then_diverging = [1.6] * 40 + [1.5, 1.4, 1.3] + [5.0, 30.0, 1e3, 1e25]
    top = spike_limit(flat_then_diverging)
    assert top is not None and 1.6 < top < 3
    assert spike_limit([2.3, 2.0, 1.5, 1.0, 0.6, 0.3, 0.1]) is None  # an ordinary falling loss
    assert spike_limit([1.6] * 20 + [3e25] + [1.6] * 9) is not None  # one blow-up
    log_top = spike_limit([1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 1e10, 1e33], log=True)
    assert log_top is not None and log_top < 100


def test_axes_are_readable():
    pytest.importorskip("matplotlib")
    from nncheck.render.html_format import figure, module_label

    assert module_label("net.2.1") == "model.net[2][1]" and module_label("0") == "model[0]"
    assert module_label("encoder.layers.0.attn") == "model.encoder.layers[0].attn" and module_label("a b") == "a b"

    spikes = {"title": "t", "curves": {"loss": {"x": list(range(30)), "y": [1.6] * 15 + [2.9e25] + [1.6] * 14}}}
    ax = figure({**spikes, "refs": {"goal": 0.08}}).axes[0]
    assert ax.get_ylim()[1] < 5  # clipped above the spike
    assert "axis clipped" in ax.get_title()
    assert ax.get_ylim()[0] <= 0.08  # the reference line stays in view
    assert "goal = 0.08" in ax.get_legend_handles_labels()[1]

    dead = {
        "kind": "bar",
        "xlabel": "layer",
        "ylabel": "dead fraction",
        "curves": {"dead": {"x": ["1", "3"], "y": [0.0, 0.0]}},
    }
    ax = figure(dead).axes[0]
    assert ax.get_ylim() == (0, 1) and any(t.get_text() == "all values are 0" for t in ax.texts)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["model[1]", "model[3]"]
    fig = figure({**dead, "curves": {"dead": {"x": ["1", "3"], "y": [1.0, 0.56]}}})
    fig.canvas.draw()
    assert "100%" in [t.get_text() for t in fig.axes[0].get_yticklabels()]

    grads = {"kind": "bar", "yscale": "log", "xlabel": "module", "curves": {"g": {"x": ["0", "2"], "y": [0.0, 0.2]}}}
    ax = figure(grads).axes[0]
    assert any(t.get_text() == "0" for t in ax.texts)  # a zero has no bar on a log axis: it is written


# ---------------------------------------------------------------------------------------------- a real browser
def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(html_file: Path, png: Path, height: int) -> str:
    """Open the report in headless Chromium: the DOM it parsed, and a screenshot of its first ``height`` pixels."""
    exe = chromium()
    assert exe is not None
    common = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    url = html_file.resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    subprocess.run(
        [*common, f"--window-size=1280,{height}", f"--screenshot={png}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom


@pytest.mark.skipif(chromium() is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_a_failing_report_in_a_real_browser(tmp_path: Path):
    """A failing report, opened in headless Chromium: the browser parses what we wrote, the failure and its plot are
    on the first screen, passes are collapsed. (docs/html_screenshot.py keeps such a screenshot in docs/.)"""
    pytest.importorskip("matplotlib")
    from PIL import Image

    from nncheck.render import render

    html_file = tmp_path / "report.html"
    html_file.write_text(render(synthetic_report(), "html"), encoding="utf-8")
    dom = browse(html_file, tmp_path / "shot.png", 1400)
    tree = Tree()
    tree.feed(dom)
    details = tree.find("details")
    assert (details[0].get("class") or "").endswith("fail") and "open" in details[0]
    assert all("open" not in a for a in details if (a.get("class") or "").endswith(("pass", "skip")))
    img = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
    assert img.shape == (1400, 1280, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not a blank page
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    red = int(((r > 180) & (g < 70) & (b < 80)).sum())  # the NOT OK badge, the FAIL block's border
    blue = int(((abs(r - 0x1F) < 25) & (abs(g - 0x77) < 25) & (abs(b - 0xB4) < 25)).sum())  # a curve of the plot
    assert red > 500 and blue > 200, (red, blue)


# ---------------------------------------------------------------------------------------------- image grids
def test_image_grid_series_is_drawn_as_mosaics():
    pytest.importorskip("matplotlib")
    import torch

    from nncheck.kit import MAX_IMAGES, image_grid
    from nncheck.render import render
    from nncheck.render.html_format import mosaic

    rgb = image_grid("filters", {"at init": torch.randn(70, 3, 5, 5), "after": torch.randn(70, 3, 5, 5)}, caption="c")
    assert rgb["kind"] == "images" and rgb["panels"]["at init"]["count"] == 70
    imgs = np.asarray(rgb["panels"]["at init"]["images"])
    assert imgs.shape == (MAX_IMAGES, 5, 5, 3) and imgs.min() == 0.0 and imgs.max() == 1.0  # each filter scaled
    grey = image_grid("g", {"w": torch.randn(5, 1, 3, 3)})
    assert np.asarray(grey["panels"]["w"]["images"]).shape == (5, 3, 3)
    assert mosaic(grey["panels"]["w"]["images"]).shape == (2 * 4 + 1, 3 * 4 + 1)  # 3 columns, 2 rows, 1-pixel gaps
    sr = SetupReport("s.py", [Result(Status.PASS, "ok", series={"filters": rgb, "grey": grey}, id="x")])
    tree = parse(render(Report([sr]), "html"))
    assert len(tree.find("img")) == 2
    assert "could not draw" not in render(Report([sr]), "html")


def test_overfit_batch_shows_the_first_conv_layers_filters_in_the_html_report():
    pytest.importorskip("matplotlib")
    from helpers import run_file

    from nncheck.render import render

    root = Path(__file__).resolve().parent.parent
    sr = run_file(root / "checks" / "lr_adam_too_high.py", budget="fast", only=["overfit-batch"])
    spec = sr.result("overfit-batch").series["first_layer_filters"]
    assert next(iter(spec["panels"])) == "at init" and any(k.startswith("after ") for k in spec["panels"])
    text = render(Report([sr]), "html")
    assert "data-series='first_layer_filters'" in text and "First-layer filters (model[0])" in text
    mlp = run_file(MLP, budget="fast", only=["overfit-batch"]).result("overfit-batch")
    assert "first_layer_filters" not in mlp.series  # an MLP has no image filters
