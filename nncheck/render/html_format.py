"""The HTML report: one self-contained file (no network, opens from disk) with plots.

A person reads it top-down: setups that are not OK first; per setup a header line (seed, device, budget, cost), a
summary table (one row per probe, fails, errors and warnings first, linking to the details), then one details block
per probe in the same order: open for a fail / error / warn (message, fix, the plots that explain it, the measured /
expected table, notes), collapsed for a pass or a skip. Plots (``Result.series``, documented on
``nncheck.report.Result``) keep their axes readable: a few spikes (a diverging loss) are clipped and marked instead
of flattening every curve, bars carry their values, an all-zero bar chart says so, fractions read as percentages,
module names read as code (``model.net[2]``), reference lines (``refs``: a goal, a rule of thumb) are drawn.
Plots are drawn by matplotlib on the Agg canvas, without pyplot, so the user's backend and global figure state are
never touched, and embedded as base64 PNG ``<img>`` tags. CSS is inline; there is no script and no external URL in
any ``src`` or ``href``.

matplotlib is an optional extra: ``pip install "nncheck[html]"``. Without it ``render`` raises ImportError with
that command (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import textwrap
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nncheck.render import fmt_value
from nncheck.report import jsonable

if TYPE_CHECKING:
    from nncheck.report import Report, Result, SetupReport

INSTALL_HINT = 'the HTML report needs matplotlib: pip install "nncheck[html]"'
FIG_SIZE_IN = (6.4, 3.6)
FIG_DPI = 100
# Bars per plot beyond which the x tick labels are thinned (layer names stop being readable).
MAX_BAR_LABELS = 40
# Bars per plot up to which each bar carries its value.
MAX_VALUE_LABELS = 16
# Spike clipping of y axes (``spike_limit``): the bulk of the values is their lowest 75%; an axis is clipped when the
# largest value lies more than 3 bulk-spans above the bulk (a diverging loss: the LR range test's last steps, a
# blow-up at one step), and then ends one bulk-span above it.
CLIP_QUANTILE = 0.75
CLIP_RATIO = 3.0

STATUS_ORDER = ("fail", "error", "warn", "pass", "skip")
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h3 { font-size: 1.05em; margin: 0; display: inline; }
.meta { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; min-width: 3.5em; text-align: center; border-radius: 4px; padding: 1px 6px;
         font-weight: 600; font-size: .85em; }
.pass .badge, .badge.pass { background: #dafbe1; color: #1a7f37; }
.warn .badge, .badge.warn { background: #fff8c5; color: #9a6700; }
.fail .badge, .badge.fail { background: #ffebe9; color: #cf222e; }
.error .badge, .badge.error { background: #fbefff; color: #8250df; }
.skip .badge, .badge.skip { background: #f6f8fa; color: #59636e; }
tr.fail td, tr.error td { background: #fff5f5; }
tr.warn td { background: #fffdf0; }
.verdict { font-weight: 700; padding: 2px 8px; border-radius: 4px; color: white; }
.verdict.ok { background: #1a7f37; } .verdict.notok { background: #cf222e; }
details { border: 1px solid #d0d7de; border-radius: 6px; margin: .6em 0; padding: .4em .8em; }
details > summary { cursor: pointer; }
.hint { background: #ddf4ff; border-left: 4px solid #0969da; padding: .4em .8em; white-space: pre-wrap; }
.setup-error { background: #ffebe9; border-left: 4px solid #cf222e; padding: .4em .8em; white-space: pre-wrap; }
.notes { color: #59636e; }
figure { margin: .6em 0; display: inline-block; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: .9em; }
.plot-error { color: #8250df; }
details.result > summary .title { color: #59636e; }
details.result > summary .short { color: #59636e; font-size: .9em; margin-left: .4em; }
details.result[open] > summary .short { display: none; }
details.result.fail, details.result.error { border-color: #cf222e; border-width: 2px; }
details.result.warn { border-color: #d4a72c; border-width: 2px; }
details.result[open] > summary { margin-bottom: .4em; }
.plots { display: flex; flex-wrap: wrap; gap: .6em; }
"""


# ---------------------------------------------------------------------------------------------- matplotlib
def _matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or ImportError saying how to install the extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return Figure, FigureCanvasAgg


def _floats(values: Iterable[Any]) -> list[float]:
    """Numbers as floats; "nan" / "inf" strings (from ``jsonable``) and other junk as their float or nan."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


def _drawable(x: float, y: float, xlog: bool, ylog: bool) -> bool:
    return math.isfinite(x) and math.isfinite(y) and (not xlog or x > 0) and (not ylog or y > 0)


def spike_limit(values: Iterable[float], log: bool = False) -> float | None:
    """The top of a y axis that a few spikes would otherwise swamp (a loss that diverges to 1e25 next to a curve at
    1.6), or None when the values need no clipping. The bulk is the lowest ``CLIP_QUANTILE`` of the values; when the
    largest value lies more than ``CLIP_RATIO`` bulk-spans above it, the axis ends one bulk-span above the bulk (in
    decades on a log axis)."""
    tv = sorted(math.log10(v) if log else v for v in values if math.isfinite(v) and (not log or v > 0))
    if len(tv) < 5:
        return None
    lo, hi = tv[0], tv[-1]
    q = tv[int(CLIP_QUANTILE * (len(tv) - 1))]
    span = max(q - lo, 0.5 if log else max(abs(q) * 0.1, 1e-12))
    if hi <= q + CLIP_RATIO * span:
        return None
    top = q + span
    return 10**top if log else top


def _clip(ax: Any, curves: list[tuple[str, list[float], list[float]]], ylog: bool, color_of: dict[str, Any]) -> str:
    """Clip the y axis above a few spikes and mark the points above it (and +inf ones) on the top edge; return the
    line that says so (for the title), or ""."""
    values = [y for _, _, ys in curves for y in ys]
    top = spike_limit(values, ylog)
    if top is None:
        return ""
    finite = [v for v in values if math.isfinite(v) and (not ylog or v > 0)]
    bottom = min(finite)
    bottom = bottom / 1.3 if ylog else bottom - 0.05 * (top - bottom)
    ax.set_ylim(bottom, top)
    for name, xs, ys in curves:
        over = [x for x, y in zip(xs, ys) if math.isfinite(x) and (y > top or y == math.inf)]
        if over:
            ax.plot(
                over,
                [top] * len(over),
                linestyle="none",
                marker="^",
                markersize=7,
                color=color_of.get(name),
                clip_on=False,
                zorder=5,
            )
    biggest = max(v for v in values if not math.isnan(v))
    return f"▲ = above {fmt_value(top)} (up to {fmt_value(biggest)}): axis clipped"


def _tick_text(v: float, _pos: Any = None) -> str:
    """Axis numbers as a person writes them: 0.2, 30, 1e-05; no offset, no 2x10^-1."""
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _readable_ticks(ax: Any, axis: str, log: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(_tick_text))
    if log:
        lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
        decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 10
        if decades <= 3:  # few major ticks: label 2x and 5x too, plainly
            target.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            target.set_minor_formatter(FuncFormatter(_tick_text))
        else:
            target.set_minor_formatter(NullFormatter())


def _draw_line(ax: Any, spec: dict[str, Any]) -> str:
    """Draw a line plot; return a note for the title ("" or the clipping line)."""
    xlog, ylog = spec.get("xscale") == "log", spec.get("yscale") == "log"
    curves = []
    colors: dict[str, Any] = {}
    for name, curve in (spec.get("curves") or {}).items():
        ys = _floats(curve.get("y", []))
        xs = _floats(curve.get("x", range(len(ys))))
        keep = [(x, y) for x, y in zip(xs, ys) if _drawable(x, y, xlog, ylog)]
        (line,) = ax.plot(
            [p[0] for p in keep], [p[1] for p in keep], marker="." if len(keep) <= 30 else None, label=str(name)
        )
        colors[str(name)] = line.get_color()
        curves.append((str(name), xs, ys))
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    note = _clip(ax, curves, ylog, colors)
    for i, (label, x) in enumerate((spec.get("marks") or {}).items()):
        xv = _floats([x])[0]
        if math.isfinite(xv) and (not xlog or xv > 0):
            ax.axvline(xv, linestyle="--", linewidth=1, color=f"C{(i + 3) % 10}", label=f"{label} = {fmt_value(x)}")
    _draw_refs(ax, spec, ylog)
    return note


def _draw_refs(ax: Any, spec: dict[str, Any], ylog: bool) -> None:
    """Horizontal reference lines (a goal, a rule of thumb), kept inside the axis."""
    for label, y in (spec.get("refs") or {}).items():
        yv = _floats([y])[0]
        if not math.isfinite(yv) or (ylog and yv <= 0):
            continue
        lo, hi = ax.get_ylim()
        ax.axhline(yv, linestyle=":", linewidth=1.5, color="#1f2328", label=f"{label} = {fmt_value(y)}")
        if not lo <= yv <= hi:
            ax.set_ylim(min(lo, yv / 1.3 if ylog else yv), max(hi, yv * 1.3 if ylog else yv))


_MODULE_PATH = re.compile(r"^[A-Za-z_0-9]+(\.[A-Za-z_0-9]+)*$")


def module_label(name: str) -> str:
    """A module name as code: ``net.2.1`` -> ``model.net[2][1]``, ``0`` -> ``model[0]`` (other names unchanged)."""
    if not name or not _MODULE_PATH.match(name):
        return name
    out = "model"
    for part in name.split("."):
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _draw_bar(ax: Any, spec: dict[str, Any]) -> bool:
    """Draw a bar plot; True when its y axis is a fraction shown in percent (its tick labels are set)."""
    curves = list((spec.get("curves") or {}).items())
    labels: list[str] = []
    for _, curve in curves:  # union of categories, in first-seen order
        for x in curve.get("x", []):
            if str(x) not in labels:
                labels.append(str(x))
    width = 0.8 / max(len(curves), 1)
    ylog = spec.get("yscale") == "log"
    percent = "fraction" in str(spec.get("ylabel", "")).lower()
    values: list[float] = []
    containers = []
    for i, (name, curve) in enumerate(curves):
        ys = _floats(curve.get("y", []))
        # a curve without x shares the categories of the others when it has as many values, else is indexed
        default_x = labels if len(labels) == len(ys) else [str(j) for j in range(len(ys))]
        xs = [str(x) for x in curve.get("x", default_x)]
        labels.extend(x for x in xs if x not in labels)
        pos = [labels.index(x) - 0.4 + width * (i + 0.5) for x in xs]
        keep = [(p, y) for p, y in zip(pos, ys) if math.isfinite(y) and (not ylog or y > 0)]
        values += [y for _, y in keep]
        if ylog:  # a zero has no bar on a log axis: write it at the bottom (a dead layer is often the finding)
            for p_, y in zip(pos, ys):
                if y == 0:
                    ax.text(
                        p_,
                        0.01,
                        "0",
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=9,
                        fontweight="bold",
                        color="#cf222e",
                    )
        containers.append(ax.bar([p for p, _ in keep], [y for _, y in keep], width=width, label=str(name)))
    if ylog:
        ax.set_yscale("log")
    elif values and min(values) >= 0:
        ax.set_ylim(bottom=0)
        if max(values) == 0:  # nothing to see: say so instead of an empty -0.04..0.04 axis
            ax.set_ylim(0, 1)
            ax.text(
                0.5,
                0.55,
                "all values are 0",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=11,
                color="#59636e",
            )
    if len(labels) <= MAX_VALUE_LABELS:
        for c in containers:
            ax.bar_label(c, labels=[_value_text(b.get_height(), percent) for b in c], fontsize=7, padding=1)
    if percent and not ylog:
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        if values and max(values) <= 1:
            ax.set_ylim(0, max(ax.get_ylim()[1], 0.1) if max(values) > 0 else 1)
    shown = labels
    if re.search(r"\b(module|layer)s?\b", str(spec.get("xlabel", "")).lower()):
        shown = [module_label(x) for x in labels]
    step = max(1, math.ceil(len(labels) / MAX_BAR_LABELS))
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks)
    rotate = len(labels) > 6 or max((len(x) for x in shown), default=0) > 12
    ax.set_xticklabels(
        [shown[t] for t in ticks], rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=8
    )
    for i, (label, x) in enumerate((spec.get("marks") or {}).items()):
        xv = labels.index(str(x)) if str(x) in labels else _floats([x])[0]
        if math.isfinite(xv):
            ax.axvline(xv, linestyle="--", linewidth=1, color=f"C{(i + 3) % 10}", label=f"{label} = {fmt_value(x)}")
    _draw_refs(ax, spec, ylog)
    return percent and not ylog


def _value_text(v: float, percent: bool) -> str:
    if percent:
        return f"{v:.0%}" if v == 0 or v >= 0.01 else f"{v:.1%}"
    return _tick_text(v)


def mosaic(images: list[Any]) -> Any:
    """Images (N, H, W) or (N, H, W, 3) in [0, 1] tiled into one near-square array with 1-pixel white gaps."""
    import numpy as np

    arr = np.asarray(images, dtype=float)
    if arr.ndim == 3:
        arr = arr[..., None]
    n, h, w, c = arr.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    out = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c))
    for i in range(n):
        r, k = divmod(i, cols)
        out[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = arr[i]
    return out[..., 0] if c == 1 else np.clip(out, 0.0, 1.0)


def _image_figure(spec: dict[str, Any]) -> Any:
    """An image grid (``"kind": "images"``): one mosaic per panel, side by side, nearest-neighbour pixels."""
    Figure, FigureCanvasAgg = _matplotlib()
    panels = [(str(k), v) for k, v in (spec.get("panels") or {}).items() if isinstance(v, dict) and v.get("images")]
    if not panels:
        raise ValueError("an image grid without images")
    fig = Figure(figsize=(max(FIG_SIZE_IN[0], 3.2 * len(panels)), FIG_SIZE_IN[1]), dpi=FIG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for i, (name, panel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        img = mosaic(panel["images"])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        shown, count = len(panel["images"]), panel.get("count", len(panel["images"]))
        ax.set_title(name + (f" (first {shown} of {count})" if count > shown else ""), fontsize=9)
        ax.set_axis_off()
    caption = textwrap.fill(str(spec.get("caption") or ""), width=int(14 * fig.get_figwidth()))
    fig.suptitle(str(spec.get("title", "")), fontsize=10)
    if caption:
        fig.supxlabel(caption, fontsize=8)
    return fig


def figure(spec: dict[str, Any]) -> Any:
    """One plot of the ``Result.series`` convention as a matplotlib Figure (Agg canvas, no pyplot)."""
    Figure, FigureCanvasAgg = _matplotlib()
    spec = jsonable(spec)
    if spec.get("kind") == "images":
        return _image_figure(spec)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=FIG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bar = spec.get("kind") == "bar"
    percent, note = False, ""
    if bar:
        percent = _draw_bar(ax, spec)
    else:
        note = _draw_line(ax, spec)
    if not percent:
        _readable_ticks(ax, "y", spec.get("yscale") == "log")
    if not bar:
        _readable_ticks(ax, "x", spec.get("xscale") == "log")
    ax.set_title(str(spec.get("title", "")) + (f"\n{note}" if note else ""), fontsize=10)
    ax.set_xlabel(str(spec.get("xlabel", "")))
    ax.set_ylabel(str(spec.get("ylabel", "")))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return fig


def plot_png(spec: dict[str, Any]) -> bytes:
    """One plot of the ``Result.series`` convention as PNG bytes."""
    buf = io.BytesIO()
    figure(spec).savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- HTML
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def anchor(setup_index: int, probe_id: str) -> str:
    return f"p{setup_index}-" + re.sub(r"[^A-Za-z0-9_-]", "-", probe_id or "probe")


def _numbers_table(r: Result) -> str:
    keys = list(dict.fromkeys([*r.measured, *r.expected]))
    if not keys:
        return ""
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class='num'>{_e(fmt_value(r.measured[k])) if k in r.measured else ''}</td>"
        f"<td class='num'>{_e(fmt_value(r.expected[k])) if k in r.expected else ''}</td></tr>"
        for k in keys
    )
    head = "<thead><tr><th>name</th><th>measured</th><th>expected</th></tr></thead>"
    return f"<table class='numbers'>{head}<tbody>{rows}</tbody></table>"


def _plots(r: Result) -> str:
    parts = []
    for name, spec in (r.series or {}).items():
        title = spec.get("title", name) if isinstance(spec, dict) else name
        try:
            png = plot_png(spec)
        except ImportError:
            raise
        except Exception as e:  # a malformed series must not lose the rest of the report
            parts.append(f"<p class='plot-error'>could not draw plot {_e(name)}: {_e(type(e).__name__)}: {_e(e)}</p>")
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure class='plot' data-series='{_e(name)}'><img alt='{_e(title)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{_e(title)}</figcaption></figure>"
        )
    return f"<div class='plots'>{''.join(parts)}</div>" if parts else ""


PROBLEMS = ("fail", "error", "warn")


def problems_first(results: list[Result]) -> list[Result]:
    """Fails, errors and warnings first (in battery order), then passes and skips (in battery order)."""
    return [r for r in results if r.status.value in PROBLEMS] + [r for r in results if r.status.value not in PROBLEMS]


def _result_details(i: int, r: Result) -> str:
    """One probe: open when it failed, errored or warned (message, fix, the plots that explain it, the numbers);
    collapsed when it passed or was skipped."""
    st = r.status.value
    is_open = " open" if st in PROBLEMS else ""
    body = [f"<p class='message'>{_e(r.message)}</p>"]
    if r.hint:
        body.append(f"<div class='hint'><strong>How to fix:</strong> {_e(r.hint)}</div>")
    body.append(_plots(r))
    body.append(_numbers_table(r))
    if r.notes:
        body.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in r.notes) + "</ul>")
    return (
        f"<details class='result {st}' id='{anchor(i, r.id)}'{is_open}>"
        f"<summary><span class='badge'>{st.upper()}</span> <h3>{_e(r.id)}</h3> "
        f"<span class='title'>{_e(r.title)}</span> <span class='short'>{_e(_short(r.message))}</span></summary>"
        f"{''.join(body)}</details>"
    )


def _short(message: str, limit: int = 90) -> str:
    return message if len(message) <= limit else message[: limit - 1].rstrip() + "…"


def _summary_table(i: int, s: SetupReport) -> str:
    rows = []
    for r in problems_first(s.results):
        st = r.status.value
        se = f"{r.steps:.0f}"
        rows.append(
            f"<tr class='{st}'><td><span class='badge'>{st.upper()}</span></td>"
            f"<td><a href='#{anchor(i, r.id)}'>{_e(r.id)}</a></td><td>{_e(r.message)}</td>"
            f"<td class='num'>{r.duration_s:.2f}</td><td class='num'>{se}</td></tr>"
        )
    return (
        "<table class='summary'><thead><tr><th>status</th><th>probe</th><th>message</th><th>seconds</th>"
        f"<th>steps</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _setup_section(i: int, s: SetupReport, strict: bool) -> str:
    ok = s.is_ok(strict)
    c = s.counts()
    counts = ", ".join(f"{c[k]} {k}" for k in STATUS_ORDER if c[k])
    cost = f"{s.duration_s:.1f} s"
    if s.step_equivalents is not None and s.step_time_s:
        cost += f": {s.step_equivalents:.0f} training steps run (one step {s.step_time_s * 1000:.1f} ms)"
    verdict = "STOPPED" if s.stopped else "OK" if ok else "NOT OK"
    out = [
        f"<section class='setup' id='setup-{i}'><h2>{_e(s.path)} "
        f"<span class='verdict {'ok' if ok else 'notok'}'>{verdict}</span></h2>",
        f"<p class='meta'>seed {s.seed} · {_e(s.device)} · budget {_e(s.budget)} · {_e(counts or 'no results')} "
        f"in {_e(cost)}</p>",
    ]
    if s.error is not None:
        label = "Stopped" if s.stopped else "Setup error"
        out.append(f"<div class='setup-error'><strong>{label}:</strong> {_e(s.error)}</div>")
    if s.notes:
        out.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in s.notes) + "</ul>")
    if s.results:
        out.append(_summary_table(i, s))
        out.extend(_result_details(i, r) for r in problems_first(s.results))
    out.append("</section>")
    return "".join(out)


def _overview(report: Report) -> str:
    rows = "".join(
        f"<tr class='{'pass' if s.is_ok(report.strict) else 'fail'}'><td><a href='#setup-{i}'>{_e(s.path)}</a></td>"
        f"<td><span class='badge {'pass' if s.is_ok(report.strict) else 'fail'}'>"
        f"{'OK' if s.is_ok(report.strict) else 'NOT OK'}</span></td>"
        + "".join(f"<td class='num'>{s.counts()[k]}</td>" for k in STATUS_ORDER)
        + "</tr>"
        for i, s in sorted(enumerate(report.setups), key=lambda t: t[1].is_ok(report.strict))
    )
    head = "".join(f"<th>{k}</th>" for k in STATUS_ORDER)
    head = f"<thead><tr><th>setup</th><th>verdict</th>{head}</tr></thead>"
    return f"<table class='overview'>{head}<tbody>{rows}</tbody></table>"


def render(report: Report, **options: Any) -> str:
    """The whole report as one HTML document (options are ignored; accepted for the renderer interface)."""
    _matplotlib()  # fail early, before any work, when the extra is missing
    from nncheck._version import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "OK" if report.ok else "NOT OK"
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>nncheck report: {_e(verdict)}</title><style>{CSS}</style></head><body>",
        f"<h1>nncheck report <span class='verdict {'ok' if report.ok else 'notok'}'>{verdict}</span></h1>",
        f"<p class='meta'>nncheck {_e(__version__)} · {len(report.setups)} setup(s) · {stamp}"
        f"{' · strict' if report.strict else ''}</p>",
    ]
    if len(report.setups) > 1:
        parts.append(_overview(report))
    order = sorted(range(len(report.setups)), key=lambda i: report.setups[i].is_ok(report.strict))  # not ok first
    parts.extend(_setup_section(i, report.setups[i], report.strict or report.setups[i].strict) for i in order)
    parts.append("</body></html>\n")
    return "\n".join(parts)
