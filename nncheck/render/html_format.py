"""The HTML report: one self-contained file (no network, opens from disk) with plots.

Layout per setup: a header line (seed, device, budget, cost), a summary table (one row per probe, coloured by
status, linking to its details), then one details block per probe with the message, a measured / expected table,
the hint, the notes and a plot for every entry of ``Result.series`` (the convention is documented on
``nncheck.report.Result``). Plots are drawn by matplotlib on the Agg canvas, without pyplot, so the user's
backend and global figure state are never touched, and embedded as base64 PNG ``<img>`` tags. CSS is inline;
there is no script and no external URL in any ``src`` or ``href``.

matplotlib is an optional extra: ``pip install "nncheck[html]"``. Without it ``render`` raises ImportError with
that command (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
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


def _finite_for_scale(xs: list[float], ys: list[float], xlog: bool, ylog: bool) -> tuple[list[float], list[float]]:
    """Drop points that cannot be drawn: non-finite, or non-positive on a log axis."""
    keep = [
        (x, y)
        for x, y in zip(xs, ys)
        if math.isfinite(x) and math.isfinite(y) and (not xlog or x > 0) and (not ylog or y > 0)
    ]
    return [p[0] for p in keep], [p[1] for p in keep]


def _draw_line(ax: Any, spec: dict[str, Any]) -> None:
    xlog, ylog = spec.get("xscale") == "log", spec.get("yscale") == "log"
    for name, curve in (spec.get("curves") or {}).items():
        ys = _floats(curve.get("y", []))
        xs = _floats(curve.get("x", range(len(ys))))
        xs, ys = _finite_for_scale(xs, ys, xlog, ylog)
        ax.plot(xs, ys, marker="." if len(xs) <= 30 else None, label=str(name))
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    for i, (label, x) in enumerate((spec.get("marks") or {}).items()):
        xv = _floats([x])[0]
        if math.isfinite(xv) and (not xlog or xv > 0):
            ax.axvline(xv, linestyle="--", linewidth=1, color=f"C{(i + 3) % 10}", label=f"{label} = {fmt_value(x)}")


def _draw_bar(ax: Any, spec: dict[str, Any]) -> None:
    curves = list((spec.get("curves") or {}).items())
    labels: list[str] = []
    for _, curve in curves:  # union of categories, in first-seen order
        for x in curve.get("x", []):
            if str(x) not in labels:
                labels.append(str(x))
    width = 0.8 / max(len(curves), 1)
    for i, (name, curve) in enumerate(curves):
        ys = _floats(curve.get("y", []))
        # a curve without x shares the categories of the others when it has as many values, else is indexed
        default_x = labels if len(labels) == len(ys) else [str(j) for j in range(len(ys))]
        xs = [str(x) for x in curve.get("x", default_x)]
        labels.extend(x for x in xs if x not in labels)
        pos = [labels.index(x) - 0.4 + width * (i + 0.5) for x in xs]
        keep = [(p, y) for p, y in zip(pos, ys) if math.isfinite(y) and (spec.get("yscale") != "log" or y > 0)]
        ax.bar([p for p, _ in keep], [y for _, y in keep], width=width, label=str(name))
    if spec.get("yscale") == "log":
        ax.set_yscale("log")
    step = max(1, math.ceil(len(labels) / MAX_BAR_LABELS))
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[t] for t in ticks], rotation=60 if len(labels) > 6 else 0, ha="right", fontsize=8)
    for i, (label, x) in enumerate((spec.get("marks") or {}).items()):
        xv = labels.index(str(x)) if str(x) in labels else _floats([x])[0]
        if math.isfinite(xv):
            ax.axvline(xv, linestyle="--", linewidth=1, color=f"C{(i + 3) % 10}", label=f"{label} = {fmt_value(x)}")


def plot_png(spec: dict[str, Any]) -> bytes:
    """One plot of the ``Result.series`` convention as PNG bytes."""
    Figure, FigureCanvasAgg = _matplotlib()
    spec = jsonable(spec)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=FIG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if spec.get("kind") == "bar":
        _draw_bar(ax, spec)
    else:
        _draw_line(ax, spec)
    ax.set_title(str(spec.get("title", "")), fontsize=10)
    ax.set_xlabel(str(spec.get("xlabel", "")))
    ax.set_ylabel(str(spec.get("ylabel", "")))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
    return "".join(parts)


def _result_details(i: int, r: Result) -> str:
    st = r.status.value
    is_open = " open" if st in ("fail", "error", "warn") or r.series else ""
    body = [f"<p class='message'>{_e(r.message)}</p>", _numbers_table(r)]
    if r.hint:
        body.append(f"<div class='hint'><strong>How to fix:</strong> {_e(r.hint)}</div>")
    if r.notes:
        body.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in r.notes) + "</ul>")
    body.append(_plots(r))
    return (
        f"<details class='result {st}' id='{anchor(i, r.id)}'{is_open}>"
        f"<summary><span class='badge'>{st.upper()}</span> <h3>{_e(r.id)}</h3> {_e(r.title)}</summary>"
        f"{''.join(body)}</details>"
    )


def _summary_table(i: int, s: SetupReport) -> str:
    rows = []
    for r in s.results:
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
    out = [
        f"<section class='setup' id='setup-{i}'><h2>{_e(s.path)} "
        f"<span class='verdict {'ok' if ok else 'notok'}'>{'OK' if ok else 'NOT OK'}</span></h2>",
        f"<p class='meta'>seed {s.seed} · {_e(s.device)} · budget {_e(s.budget)} · {_e(counts or 'no results')} "
        f"in {_e(cost)}</p>",
    ]
    if s.error is not None:
        out.append(f"<div class='setup-error'><strong>Setup error:</strong> {_e(s.error)}</div>")
    if s.results:
        out.append(_summary_table(i, s))
        out.extend(_result_details(i, r) for r in s.results)
    out.append("</section>")
    return "".join(out)


def _overview(report: Report) -> str:
    rows = "".join(
        f"<tr class='{'pass' if s.is_ok(report.strict) else 'fail'}'><td><a href='#setup-{i}'>{_e(s.path)}</a></td>"
        f"<td><span class='badge {'pass' if s.is_ok(report.strict) else 'fail'}'>"
        f"{'OK' if s.is_ok(report.strict) else 'NOT OK'}</span></td>"
        + "".join(f"<td class='num'>{s.counts()[k]}</td>" for k in STATUS_ORDER)
        + "</tr>"
        for i, s in enumerate(report.setups)
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
    parts.extend(_setup_section(i, s, report.strict or s.strict) for i, s in enumerate(report.setups))
    parts.append("</body></html>\n")
    return "\n".join(parts)
