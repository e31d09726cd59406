"""A self-contained HTML leaderboard page: sortable tables, embedded plots, no network.

Everything the page needs is inline (CSS, a small sorting script, plots as data: URIs), so
it can be mailed, archived or opened from disk. Clicking a header sorts by that column;
``page.html#sort=-accuracy`` sorts on load (a leading '-' means descending).
"""

from __future__ import annotations

import base64
import re
from html import escape

from vlbench.errors import DataError, VLBenchError
from vlbench.results.leaderboard import Leaderboard, Section
from vlbench.results.render import footnote, section_table

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; margin: 2rem auto; max-width: 1440px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta, .foot { color: #59636e; font-size: .85rem; }
.badge { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 1em; padding: 0 .6em;
         font-size: .75rem; vertical-align: middle; }
table.lb { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.lb { font-size: 13px; }
table.lb th, table.lb td { padding: .3rem .5rem; border-bottom: 1px solid #d1d9e0;
                           white-space: nowrap; text-align: right; }
table.lb th.text, table.lb td.text { text-align: left; }
table.lb th { background: #f6f8fa; position: sticky; top: 0; cursor: pointer;
              user-select: none; }
table.lb th:hover { background: #eaeef2; }
table.lb th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: .7em; }
table.lb th[aria-sort="descending"]::after { content: " \\25BC"; font-size: .7em; }
table.lb tbody tr:nth-child(even) { background: #fafbfc; }
table.lb tr.ref { background: #eef4ff !important; }
table.lb tr.baseline { color: #59636e; font-style: italic; }
.scroll { overflow-x: auto; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 1rem; }
figure { flex: 1 1 520px; max-width: 700px; margin: 0; }
figure img { width: 100%; border: 1px solid #d1d9e0; border-radius: 6px; }
figcaption { color: #59636e; font-size: .8rem; }
ul.notes { color: #59636e; font-size: .85rem; }
"""

# Sorting runs with no dependency: numbers by data-value (missing values always last),
# text by locale order. The hash #sort=[-]column applies on load.
_JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null) return cell.textContent.trim();
    return v === "" ? NaN : parseFloat(v);
  }
  function sortTable(table, col, desc) {
    var th = table.querySelector('th[data-col="' + col + '"]');
    if (!th) return false;
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[idx]), y = key(b.cells[idx]);
      if (typeof x === "number" || typeof y === "number") {
        var xn = typeof x === "number" && !isNaN(x), yn = typeof y === "number" && !isNaN(y);
        if (!xn || !yn) return xn === yn ? 0 : (xn ? -1 : 1);
        return desc ? y - x : x - y;
      }
      return desc ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    table.setAttribute("data-sort", (desc ? "-" : "") + col);
    return true;
  }
  function init() {
    var tables = document.querySelectorAll("table.lb");
    Array.prototype.forEach.call(tables, function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        th.addEventListener("click", function () {
          var numeric = th.getAttribute("data-type") === "num";
          var now = th.getAttribute("aria-sort");
          var desc = now ? now === "ascending" : numeric;
          sortTable(table, th.getAttribute("data-col"), desc);
        });
      });
    });
    var m = /sort=(-?)([^&]+)/.exec(decodeURIComponent(location.hash.slice(1)));
    if (m) {
      Array.prototype.forEach.call(tables, function (t) { sortTable(t, m[2], m[1] === "-"); });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
"""


def column_key(header: str) -> str:
    """The name a column is sorted by in ``#sort=``: e.g. 'accuracy', 'params', 'rank'."""
    if header == "#":
        return "rank"
    if header.endswith("% CI"):
        return "ci"
    slug = re.sub(r"[^a-z0-9.]+", "-", header.lower()).strip("-")
    return slug or "col"


def _table(board: Leaderboard, section: Section, index: int) -> str:
    headers, body = section_table(board, section)
    numeric = [any(cells[i].value is not None for cells in body) for i in range(len(headers))]
    out = [f'<div class="scroll"><table class="lb" id="lb-{index}"><thead><tr>']
    for h, num in zip(headers, numeric, strict=True):
        kind = "num" if num else "text"
        cls = "" if num else ' class="text"'
        out.append(f'<th data-col="{escape(column_key(h))}" data-type="{kind}"{cls}>'
                   f"{escape(h)}</th>")
    out.append("</tr></thead><tbody>")
    for row, cells in zip(section.rows, body, strict=True):
        cls = "ref" if row.is_reference else "baseline" if row.kind == "baseline" else ""
        runs = escape(" ".join(r.run_id for r in row.runs))
        out.append(f'<tr class="{cls}" title="{runs}">')
        for cell, num in zip(cells, numeric, strict=True):
            if num:
                value = "" if cell.value is None or cell.value != cell.value else repr(cell.value)
                out.append(f'<td data-value="{value}">{escape(cell.text)}</td>')
            else:
                out.append(f'<td class="text">{escape(cell.text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figures(section: Section, notes: list[str]) -> str:
    """Bar chart and accuracy-vs-parameters plot of a section, as inline SVG images."""
    from vlbench.results.plots import accuracy_vs_compute, figure_bytes, grid_bars

    out = []
    for caption, build in (
        (f"{section.metric} by row (error bars: intervals)", lambda: grid_bars(section)),
        (f"{section.metric} against parameters, with the Pareto front",
         lambda: accuracy_vs_compute(section, "params")),
    ):
        try:
            svg = figure_bytes(build(), "svg")
        except DataError:
            continue  # nothing to plot for this section (e.g. no parameter counts)
        except VLBenchError as err:
            notes.append(str(err))
            return ""
        data = base64.b64encode(svg).decode("ascii")
        out.append(f'<figure><img alt="{escape(caption)}" src="data:image/svg+xml;base64,{data}">'
                   f"<figcaption>{escape(caption)}</figcaption></figure>")
    return f'<div class="figs">{"".join(out)}</div>' if out else ""


def render_html(board: Leaderboard, *, plots: bool = True) -> str:
    """The whole page as a string (UTF-8, no external resources)."""
    notes: list[str] = []
    parts = []
    for i, section in enumerate(board.sections):
        badge = ' <span class="badge">synthetic data</span>' if section.synthetic else ""
        title = escape(section.title.replace(" (synthetic data)", ""))
        parts.append(f"<section><h2>{title}{badge}</h2>{_table(board, section, i)}")
        if plots and not notes:
            parts.append(_figures(section, notes))
        parts.append("</section>")
    runs = {r.path: r for s in board.sections for row in s.rows for r in row.runs}.values()
    n_runs = len(runs)
    # Dated by the records, not the clock, so that the same runs always give the same page.
    started = [r.get("provenance.started") for r in runs if r.get("provenance.started")]
    stamp = f"the newest started {max(started).replace('T', ' ').removesuffix('Z')} UTC" if started else "undated"
    remarks = list(dict.fromkeys(notes + board.notes + [str(p) for p in board.problems]))
    notes_html = ("<h2>Notes</h2><ul class=\"notes\">"
                  + "".join(f"<li>{escape(n)}</li>" for n in remarks) + "</ul>") if remarks else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(board.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(board.title)}</h1>"
        f"<p class=\"meta\">{n_runs} runs ({stamp}), tabulated by vlbench. Click a column header "
        "to sort.</p>"
        + "".join(parts)
        + f"<p class=\"foot\">{escape(footnote(board))}</p>{notes_html}"
        f"<script>{_JS}</script></body></html>\n"
    )
