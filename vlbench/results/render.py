"""Leaderboard renderers: rich (terminal), Markdown, CSV, JSON, LaTeX (HTML: html.py)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlbench.errors import ConfigError
from vlbench.results.leaderboard import FIXED_KEYS, Leaderboard, Row, Section
from vlbench.results.stats import Interval

FORMATS = ("md", "csv", "json", "html", "latex")
SUFFIXES = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json", ".html": "html",
            ".htm": "html", ".tex": "latex"}
_HEADERS = {"model": "Model", "variant": "Variant", "objectives": "Objectives", "seed": "Seed"}


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown and the number it sorts by (None: sort as text)."""

    text: str
    value: float | None = None


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table, '-' when missing."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_count(x: float | None) -> str:
    """Parameter counts like 209.1M."""
    if x is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def fmt_summary(s: Interval | None) -> str:
    """'61.20 ± 0.40' over seeds, '61.20' for one run."""
    if s is None:
        return "-"
    return fmt(s.mean) if s.std is None else f"{fmt(s.mean)} ± {fmt(s.std)}"


def fmt_interval(s: Interval | None) -> str:
    if s is None or s.ci_low is None or s.ci_high is None:
        return "-"
    mark = "†" if s.method == "bootstrap" else ""
    return f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]{mark}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def group_keys(board: Leaderboard) -> list[str]:
    return [k for k in board.group_by if k not in FIXED_KEYS]


def has_grid(section: Section) -> bool:
    return any(r.is_reference for r in section.rows)


def section_table(board: Leaderboard, section: Section) -> tuple[list[str], list[list[Cell]]]:
    """Headers and cells of one section, shared by every text renderer and the HTML page."""
    keys = group_keys(board)
    level = round(board.confidence * 100)
    headers = ["#", *(_HEADERS.get(k, k) for k in keys), "Seeds", section.metric,
               f"{level}% CI", *section.metric_names[1:], "Params", "Train ex/s", "Wall (s)"]
    grid = has_grid(section)
    if grid:
        headers += ["Δ vs ref", "95% CI of Δ", "p (Holm)", "Sig."]
    body = []
    for rank, row in enumerate(section.rows, start=1):
        head = row.metrics.get(section.metric)
        cells = [Cell(str(rank), rank), *(Cell(row.group.get(k, "")) for k in keys),
                 Cell(str(row.n_seeds) if row.runs else "-", row.n_seeds),
                 Cell(fmt_summary(head), row.value(section.metric)),
                 Cell(fmt_interval(head), head.ci_low if head else None)]
        for name in section.metric_names[1:]:
            cells.append(Cell(fmt_summary(row.metrics.get(name)), row.value(name)))
        cells += [Cell(fmt_count(row.params), row.params),
                  Cell(fmt(row.train_examples_per_s, 0), row.train_examples_per_s),
                  Cell(fmt(row.wall_seconds, 0), row.wall_seconds)]
        if grid:
            cells += _grid_cells(row)
        body.append(cells)
    return headers, body


def _grid_cells(row: Row) -> list[Cell]:
    if row.is_reference:
        return [Cell("ref"), Cell("-"), Cell("-"), Cell("")]
    v = row.versus
    if v is None:
        return [Cell("-"), Cell("-"), Cell("-"), Cell("")]
    delta = "-" if v.delta is None else f"{v.delta:+.2f}"
    ci = "-" if v.ci_low is None else f"[{v.ci_low:+.2f}, {v.ci_high:+.2f}]"
    return [Cell(delta, v.delta), Cell(ci), Cell(fmt_p(v.p_holm), v.p_holm),
            Cell("*" if v.significant else "")]


def footnote(board: Leaderboard) -> str:
    level = round(board.confidence * 100)
    text = (f"Mean ± std over seeds; {level}% CI: t over seeds, or bootstrap over questions "
            "for a single run (†).")
    if any(has_grid(s) for s in board.sections):
        text += (" Δ vs ref: difference to the reference row, with its 95% t interval when "
                 "both rows ran the same seeds; p: paired t over those seeds, Welch's t over "
                 "other seeds, or over questions exact McNemar (right/wrong) or a sign-flip test "
                 "(soft scores), Holm-corrected; * significant.")
    return text


def to_markdown(board: Leaderboard) -> str:
    """GitHub-flavoured Markdown: a heading and a table per section."""
    out = [f"# {board.title}", ""]
    for section in board.sections:
        headers, body = section_table(board, section)
        out += [f"## {section.title}", "", f"Data: {section.source} (questions {section.fingerprint})", "",
                _md_row(headers),
                "|" + "|".join("---" for _ in headers) + "|"]
        out += [_md_row([c.text for c in cells]) for cells in body]
        out.append("")
    out.append(footnote(board))
    return "\n".join(out) + "\n"


def _md_row(texts: list[str]) -> str:
    return "| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |"


def to_json(board: Leaderboard) -> str:
    return json.dumps(board.to_json(), indent=2, ensure_ascii=False) + "\n"


def to_csv(board: Leaderboard) -> str:
    """One line per row; each metric as ``<name>.mean``, ``.std``, ``.ci_low``, ``.ci_high``."""
    data = board.to_json()["rows"]
    fixed = ["task", "split", "rank", "kind", "model", "variant", "objectives", "data_fingerprint",
             "data_source", "synthetic", "n_seeds", "params", "train_examples_per_s",
             "wall_seconds", "metric", "mean", "std", "ci_low", "ci_high", "ci_method"]
    extra_keys = list(dict.fromkeys(k for r in data for k in r["group"] if k not in fixed))
    metric_names = list(dict.fromkeys(m for r in data for m in r["metrics"]))
    columns = fixed + extra_keys + [f"{m}.{f}" for m in metric_names
                                    for f in ("mean", "std", "ci_low", "ci_high")]
    if any(r["vs_reference"] or r["reference"] for r in data):
        columns += ["reference", "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm",
                    "significant", "test"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in data:
        line: dict[str, Any] = {k: r.get(k) for k in fixed}
        line["objectives"] = ",".join(r["objectives"])
        line.update({k: r["group"].get(k) for k in extra_keys})
        for m, s in r["metrics"].items():
            line.update({f"{m}.{f}": s[f] for f in ("mean", "std", "ci_low", "ci_high")})
        line["reference"] = r["reference"]
        versus = dict(r["vs_reference"] or {})
        versus["delta_ci_low"], versus["delta_ci_high"] = versus.pop("ci_low", None), versus.pop("ci_high", None)
        line.update(versus)
        writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return buf.getvalue()


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}", "±": r"$\pm$", "†": r"$^\dagger$",
                  "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(board: Leaderboard) -> str:
    """A booktabs ``table`` per section (needs ``\\usepackage{booktabs}``)."""
    out = [f"% {board.title}", f"% {footnote(board)}"]
    for section in board.sections:
        headers, body = section_table(board, section)
        out += [r"\begin{table}[t]", r"\centering", r"\small",
                r"\begin{tabular}{" + "l" * len(headers) + "}", r"\toprule",
                " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
        out += [" & ".join(latex_escape(c.text) for c in cells) + r" \\" for cells in body]
        out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(section.title)}}}",
                r"\end{table}", ""]
    return "\n".join(out)


def to_html(board: Leaderboard) -> str:
    from vlbench.results.html import render_html

    return render_html(board)


RENDERERS: dict[str, Callable[[Leaderboard], str]] = {
    "md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html, "latex": to_latex,
}


def render(board: Leaderboard, fmt_name: str) -> str:
    """The leaderboard in one of :data:`FORMATS`."""
    try:
        return RENDERERS[fmt_name](board)
    except KeyError:
        raise ConfigError(
            f"--format {fmt_name}: unknown; use one of {', '.join(FORMATS)}"
        ) from None


def _compact(board: Leaderboard, section: Section) -> tuple[str, list[str], list[list[str]],
                                                             list[bool]]:
    """The terminal's narrower table: grouping columns equal on every row move to the title,
    metrics after the headline show their mean only, and grid columns follow the interval.
    Also says which columns are optional (dropped first when the terminal is narrow)."""
    headers, body = section_table(board, section)
    title = section.title
    keys = group_keys(board)
    drop = set()
    for offset, key in enumerate(keys, start=1):
        values = {cells[offset].text for cells in body}
        if len(body) > 1 and len(values) == 1:
            drop.add(offset)
            title += f", {_HEADERS.get(key, key).lower()}: {values.pop()}"
    others = {headers.index(name) for name in section.metric_names[1:]}
    head_end = headers.index(section.metric) + 2  # headline and its interval
    n_grid = 3 if has_grid(section) else 0
    order = [*range(head_end), *range(len(headers) - n_grid, len(headers)),
             *range(head_end, len(headers) - n_grid)]
    order = [i for i in order if i not in drop]
    rows = [[fmt(cells[i].value) if i in others else cells[i].text for i in order]
            for cells in body]
    optional = [i >= head_end and i < len(headers) - n_grid for i in order]
    return title, [headers[i] for i in order], rows, optional


def print_rich(board: Leaderboard, console: Any) -> None:
    """Print the leaderboard as rich tables on ``console`` (a ``rich.console.Console``).

    Columns after the headline (other metrics, size, speed) are dropped from the right when
    the terminal is too narrow; the other formats always have them all.
    """
    from rich import box
    from rich.table import Table

    console.print(f"[bold]{board.title}[/bold]")
    hidden = 0
    for section in board.sections:
        title, headers, body, optional = _compact(board, section)
        widths = [max([len(row[i]) for row in body] + [max(map(len, h.split()), default=1)])
                  for i, h in enumerate(headers)]
        keep = list(range(len(headers)))
        while sum(widths[i] + 3 for i in keep) > console.width and any(optional[i] for i in keep):
            keep.remove(max(i for i in keep if optional[i]))
            hidden = max(hidden, len(headers) - len(keep))
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i in keep:
            h = headers[i]
            numeric = i == 0 or h not in _HEADERS.values() and h != "Sig."
            table.add_column(h, justify="right" if numeric else "left", min_width=widths[i])
        for row in body:
            table.add_row(*(row[i] for i in keep))
        console.print(table)
    if hidden:
        console.print(f"({hidden} column(s) hidden for width; widen the terminal or use "
                      "--format md)", style="dim")
    console.print(footnote(board), style="dim")
