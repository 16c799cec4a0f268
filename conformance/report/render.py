"""The files of a conformance report: report.json, report.md, report.html and plots/*.png.

Input is the report's data (see report/writer.py; schema in reports/README.md) and the raw
err/bound samples per property and output. The HTML page is self-contained: its plots are
embedded as base64 PNG and it loads nothing. matplotlib (the `plots` extra) draws the
histograms; without it the report says that plots are unavailable.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"theta": "#1f77b4", "m": "#ff7f0e", "v": "#2ca02c", "vmax": "#9467bd"}
OUTCOME_COLORS = {"passed": "#d4edda", "failed": "#f8d7da", "error": "#f8d7da",
                  "xfailed": "#fff3cd", "xpassed": "#fff3cd", "skipped": "#e2e3e5"}
BIN = 0.25  # log10 units: four bins per decade


def _pyplot() -> Any | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(cid: str, outputs: dict[str, np.ndarray]) -> bytes | None:
    """Histogram of log10(err/bound) per output of one property, as PNG bytes (None without
    matplotlib or without any non-zero finite ratio to draw)."""
    plt = _pyplot()
    logs = {}
    order = [o for o in COLORS if o in outputs] + sorted(set(outputs) - set(COLORS))
    for name, r in ((o, outputs[o]) for o in order):
        r = r[~np.isnan(r)]
        positive = r[(r > 0) & np.isfinite(r)]
        if positive.size:
            logs[name] = (np.log10(positive), int(np.count_nonzero(r == 0)),
                          int(np.count_nonzero(np.isinf(r))))
    if plt is None or not logs:
        return None
    everything = np.concatenate([v[0] for v in logs.values()])
    lo = max(-12.0, min(-6.0, np.floor(everything.min())))
    hi = min(12.0, max(1.0, np.ceil(everything.max())))
    bins = np.arange(lo, hi + BIN / 2, BIN)
    fig, ax = plt.subplots(figsize=(5.6, 2.5), dpi=80)
    for name, (values, exact, infinite) in logs.items():
        label = f"{name} ({values.size} > 0"
        label += f", {exact} exact" if exact else ""
        label += f", {infinite} inf" if infinite else ""
        ax.hist(np.clip(values, lo, hi), bins=bins, histtype="step", linewidth=1.4,
                color=COLORS.get(name), label=label + ")")
    ax.axvline(0.0, color="#c00", linestyle="--", linewidth=1)
    ax.text(0.02, 0.95, "bound", color="#c00", transform=ax.get_xaxis_transform(),
            fontsize=7, va="top")
    ax.set_yscale("log")
    ax.set_xlabel("log10(err / bound)", fontsize=8)
    ax.set_ylabel("elements", fontsize=8)
    ax.set_title(cid, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.06, 1.0), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes, so diffs stay minimal
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if x == "inf":
        return "inf"
    return f"{x:.3g}"


def _md_cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _header_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    res, meta = data["results"], data["metadata"]
    t, s = res["target"], res["settings"]
    return [
        ("implementation", f"{t['name']} {t['version']} (--impl={t['impl']})"),
        ("device, dtype", f"{t['device']}, {t['dtype']}"),
        ("precision profile", t["precision"]),
        ("rule, conventions", f"{t['rule']}; {t['conventions']}"),
        ("state", t.get("state", "not recorded")),
        ("evaluation orders", t.get("orders", "not recorded")),
        ("hypothesis", f"profile {s['hypothesis_profile']}, seed {s['hypothesis_seed']}"),
        ("settings", f"compute dtype {s['compute_dtype'] or 'default (opmath)'}, xfails "
                     f"{s['xfails'] or 'none'}, impl timeout {s['impl_timeout']:g} s"
                     + (f" (after a warm-up of {s['warm_up_seconds']:g} s)"
                        if s.get("warm_up_seconds") is not None else "")),
        *((("refused options", "; ".join(s["refused_options"])),)
          if s.get("refused_options") else ()),
        ("versions", ", ".join(f"{k} {v}" for k, v in meta["versions"].items())),
        ("date", f"{meta['date']} ({meta['seconds']:g} s, {meta['platform']})"),
        ("command", meta["command"]),
    ]


def _summary_line(res: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {o}" for o, n in res["summary"].items() if n)
    return f"{counts or 'no tests'}; {res['elements_judged']} elements judged against the bound"


def _outputs(res: dict[str, Any]) -> list[str]:
    names = {o for p in res["properties"].values() for o in p["outputs"]}
    return [o for o in COLORS if o in names] + sorted(names - set(COLORS))


def markdown(data: dict[str, Any], plots: dict[str, str | None], plots_note: str) -> str:
    res = data["results"]
    outs = _outputs(res)
    lines = [f"# Conformance report: {data['name']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_md_cell(v)} |" for k, v in _header_rows(data)]
    lines += ["", f"**Result:** {_summary_line(res)}.", "", "## Properties", "",
              "Worst err/bound over every element the verdicts judged (1 is the bound; `-`: "
              "no element judged by a bound, e.g. bitwise or behavioural properties).", "",
              "| property | outcome | tests | worst err/bound | "
              + " | ".join(outs) + " | elements |",
              "|---|---|---|---|" + "---|" * len(outs) + "---|"]
    for cid, p in sorted(res["properties"].items()):
        tests = ", ".join(f"{n} {o}" for o, n in sorted(p["tests"].items()))
        per = " | ".join(_fmt(p["outputs"].get(o, {}).get("worst")) for o in outs)
        lines.append(f"| `{cid}` | {p['outcome']} | {tests} | {_fmt(p['worst'])} | {per} | "
                     f"{p['elements']} |")
    if res.get("root_cause"):
        lines += ["", "## Root cause", "", *(f"- {_md_cell(line)}" for line in res["root_cause"])]
    lines += ["", "## Tests", "", "| property | test | outcome | message |", "|---|---|---|---|"]
    for t in res["tests"]:
        lines.append(f"| `{t['catalogue']}` | `{_md_cell(t['id'])}` | {t['outcome']} | "
                     f"{_md_cell(t['message'])} |")
    lines += ["", "## Fingerprint", ""]
    fp = res["fingerprint"]
    if fp["available"]:
        lines += [fp["conventions"], "", fp["table"]]
    else:
        lines.append(fp["note"])
    lines += ["", "## Distributions of err/bound", ""]
    if plots_note:
        lines.append(plots_note)
    for cid, path in sorted(plots.items()):
        if path:
            lines.append(f"![{cid}]({path})")
    details = [t for t in res["tests"] if t["detail"] and t["outcome"] in ("failed", "error",
                                                                          "xfailed")]
    if details:
        lines += ["", "## Failures in full", ""]
        for t in details:
            lines += [f"### `{t['id']}` ({t['outcome']})", "", "```text", t["detail"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } code, pre { font-size: 0.92em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { margin: 0.3em; border: 1px solid #ddd; }
"""


def _h(x: Any) -> str:
    return html.escape(str(x if x is not None else ""))


def _outcome_cell(outcome: str) -> str:
    return f'<td style="background:{OUTCOME_COLORS.get(outcome, "#fff")}">{_h(outcome)}</td>'


def page(data: dict[str, Any], pngs: dict[str, bytes | None], plots_note: str) -> str:
    res = data["results"]
    outs = _outputs(res)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Conformance report: {_h(data['name'])}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Conformance report: {_h(data['name'])}</h1>", "<table>"]
    parts += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _header_rows(data)]
    parts += ["</table>", f"<p><b>Result:</b> {_h(_summary_line(res))}.</p>",
              "<h2>Properties</h2>",
              "<p>Worst err/bound over every element the verdicts judged (1 is the bound; "
              "- : no element judged by a bound).</p>",
              "<table><tr><th>property</th><th>outcome</th><th>tests</th>"
              "<th>worst err/bound</th>" + "".join(f"<th>{_h(o)}</th>" for o in outs)
              + "<th>elements</th></tr>"]
    for cid, p in sorted(res["properties"].items()):
        tests = ", ".join(f"{n} {o}" for o, n in sorted(p["tests"].items()))
        per = "".join(f'<td class="num">{_fmt(p["outputs"].get(o, {}).get("worst"))}</td>'
                      for o in outs)
        parts.append(f"<tr><td><code>{_h(cid)}</code></td>{_outcome_cell(p['outcome'])}"
                     f"<td>{_h(tests)}</td><td class=\"num\">{_fmt(p['worst'])}</td>{per}"
                     f"<td class=\"num\">{p['elements']}</td></tr>")
    parts.append("</table>")
    if res.get("root_cause"):
        parts += ["<h2>Root cause</h2>", "<ul>",
                  *(f"<li>{_h(line)}</li>" for line in res["root_cause"]), "</ul>"]
    parts += ["<h2>Tests</h2>",
              "<table><tr><th>property</th><th>test</th><th>outcome</th><th>message</th></tr>"]
    for t in res["tests"]:
        msg = _h(t["message"])
        if t["detail"]:
            msg = f"<details><summary>{msg}</summary><pre>{_h(t['detail'])}</pre></details>"
        parts.append(f"<tr><td><code>{_h(t['catalogue'])}</code></td><td><code>{_h(t['id'])}"
                     f"</code></td>{_outcome_cell(t['outcome'])}<td>{msg}</td></tr>")
    parts += ["</table>", "<h2>Fingerprint</h2>"]
    fp = res["fingerprint"]
    if fp["available"]:
        parts += [f"<p>{_h(fp['conventions'])}</p>", f"<pre>{_h(fp['table'])}</pre>"]
    else:
        parts.append(f"<p>{_h(fp['note'])}</p>")
    parts += ["<h2>Distributions of err/bound</h2>"]
    if plots_note:
        parts.append(f"<p>{_h(plots_note)}</p>")
    parts.append('<div class="plots">')
    for cid, png in sorted(pngs.items()):
        if png:
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f'<img alt="{_h(cid)}" src="data:image/png;base64,{b64}">')
    parts += ["</div>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_all(out: Path, data: dict[str, Any], samples: dict[str, dict[str, np.ndarray]]) -> None:
    """Write report.json, report.md, report.html and plots/ under `out` (stale plots removed)."""
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = out / "plots"
    if plot_dir.exists():
        for old in plot_dir.glob("*.png"):
            old.unlink()
    have_matplotlib = _pyplot() is not None
    pngs = {cid: plot(cid, outs) for cid, outs in samples.items()} if have_matplotlib else {}
    paths: dict[str, str | None] = {}
    for cid, png in pngs.items():
        if png:
            plot_dir.mkdir(exist_ok=True)
            (plot_dir / f"{cid}.png").write_bytes(png)
            paths[cid] = f"plots/{cid}.png"
    note = ("" if have_matplotlib else
            "Plots unavailable: matplotlib is not installed (pip install -e '.[plots]').")
    if have_matplotlib and not paths:
        note = "No plots: no verdict judged an element with a non-zero error against a bound."
    data["metadata"]["plots"] = note or f"{len(paths)} histograms in plots/"
    (out / "report.json").write_text(json.dumps(data, sort_keys=True, indent=1,
                                                allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(data, paths, note))
    (out / "report.html").write_text(page(data, pngs, note))
