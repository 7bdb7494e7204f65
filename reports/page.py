"""How figures and tables become ONE self-contained HTML page that opens offline.

A page is a list of `Section`s; a section is a list of blocks: a plotly Figure, `Html`
(markup this module or a caller built with every user string escaped), or a plain `str`
(escaped here and shown as a paragraph). plotly.js is inlined once in the head, every figure
is a div that only calls `Plotly.newPlot`, and a figure built by `figures.no_data` becomes its
sentence instead of an empty frame. The first script of the page records JavaScript errors in
the `data-js-errors` attribute of <html>, so a headless browser can tell a broken page from a
working one.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ..geometry.errors import ProtoscopeError
from .figures import esc, no_data_reason, snippet

_ERROR_RECORDER = """(function () {
  var seen = [];
  function note(message) {
    seen.push(String(message));
    document.documentElement.setAttribute("data-js-errors", seen.join(" | "));
  }
  window.addEventListener("error", function (e) { note(e.message || "error"); });
  window.addEventListener("unhandledrejection", function (e) { note("rejection: " + e.reason); });
})();"""

# Click a header to sort by that column; numbers (data-v) sort numerically, the rest as text.
_TABLE_SORT = """document.addEventListener("click", function (e) {
  var th = e.target.closest("table.sortable th");
  if (!th) return;
  var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  var up = th.getAttribute("data-dir") !== "up";
  th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
  th.setAttribute("data-dir", up ? "up" : "down");
  function key(row) {
    var cell = row.cells[col], v = cell.getAttribute("data-v");
    return v !== null && v !== "" && !isNaN(v) ? parseFloat(v) : cell.textContent;
  }
  Array.from(body.rows).sort(function (a, b) {
    var x = key(a), y = key(b);
    var c = (typeof x === "number" && typeof y === "number") ? x - y
      : String(x).localeCompare(String(y));
    return up ? c : -c;
  }).forEach(function (row) { body.appendChild(row); });
});"""

_STYLE = """body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
  padding: 0 24px 48px; color: #222; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
nav a { margin-right: 14px; }
section { margin-top: 28px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
.plot { margin: 12px 0; }
p.no-data { color: #666; font-style: italic; padding: 6px 10px; border-left: 3px solid #ccc; }
p.learned-starts { padding: 6px 10px; border-left: 3px solid #c60; }  /* verdicts held back */
.table-wrap { max-height: 420px; overflow: auto; border: 1px solid #ddd; margin: 12px 0; }
#findings .table-wrap { max-height: none; }  /* the answers: never scrolled out of sight */
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left;
  white-space: nowrap; }
th { position: sticky; top: 0; background: #f4f4f4; }
table.sortable th { cursor: pointer; }
th[data-dir="up"]::after { content: " \\25B2"; }
th[data-dir="down"]::after { content: " \\25BC"; }
td.text { white-space: normal; min-width: 240px; }"""


class Html(str):
    """Markup whose user strings are already escaped; the page inserts it as is."""


Block = go.Figure | Html | str


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def paragraph(text: str, css: str = "") -> Html:
    cls = f' class="{esc(css)}"' if css else ""
    return Html(f"<p{cls}>{esc(text)}</p>")


def meta_list(items: dict[str, object]) -> Html:
    """A definition list of run facts (model, recipe, ...), every value escaped."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items())
    return Html(f'<dl class="meta">{rows}</dl>')


def _cell(value: object, text_limit: int | None) -> str:
    if isinstance(value, bool) or value is None or (isinstance(value, float) and
                                                     math.isnan(value)):
        return f"<td>{esc('' if value is None or value != value else value)}</td>"
    if isinstance(value, (int, float)):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f'<td data-v="{value!r}">{esc(shown)}</td>'
    text = str(value)
    if text_limit is not None and len(text) > text_limit:
        # The full text goes into the title attribute: browsers show it on hover, as text.
        return f'<td class="text" title="{esc(text)}">{esc(snippet(text, text_limit))}</td>'
    return f'<td class="text">{esc(text)}</td>' if text_limit is not None else \
        f"<td>{esc(text)}</td>"


def html_table(frame: pd.DataFrame | None, columns: list[str] | None = None, *,
               text_columns: tuple[str, ...] = (), text_limit: int = 80,
               max_rows: int = 500, empty: str = "No rows.") -> Html:
    """A sortable HTML table; `text_columns` are truncated with the full text on hover."""
    if frame is None or frame.empty:
        return paragraph(empty, "no-data")
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    shown = frame.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for record in shown[columns].itertuples(index=False, name=None):
        cells = (_cell(_plain(v), text_limit if c in text_columns else None)
                 for c, v in zip(columns, record))
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = "" if len(shown) == len(frame) else \
        paragraph(f"Showing the first {len(shown)} of {len(frame)} rows.", "no-data")
    return Html(f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr>'
                f'</thead><tbody>{"".join(body)}</tbody></table></div>{note}')


def _plain(value: object) -> object:
    """numpy/pandas scalars to Python ones, so numbers sort as numbers."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return None if value is pd.NA or value is pd.NaT else value


def figure_html(fig: go.Figure, div_id: str) -> Html:
    """One figure as a div (plotly.js comes from the page head), or its no-data sentence."""
    reason = no_data_reason(fig)
    if reason is not None:
        title = html.unescape(fig.layout.title.text or "")
        lead = f"<strong>{esc(title)}</strong>: " if title else ""
        return Html(f'<p class="no-data">{lead}{esc(reason)}</p>')
    # to_html writes the figure JSON with <, > and / escaped as \\u003c etc., so a text
    # holding </script> cannot close the script element.
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return Html(f'<div class="plot" data-figure="{esc(div_id)}">{body}</div>')


def figures_of(sections: list[Section]) -> list[tuple[str, go.Figure]]:
    """(name, figure) for every figure that has data, in page order: the static export list."""
    out = []
    for section in sections:
        figs = [b for b in section.blocks if isinstance(b, go.Figure) and
                no_data_reason(b) is None]
        out.extend((f"{section.anchor}-{i + 1:02d}", f) for i, f in enumerate(figs))
    return out


def _inline_plotlyjs() -> str:
    bundle = get_plotlyjs()
    # The bundle ships inside a <script>; a literal "</script" in it would end that element.
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    return ('<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};'
            f'</script>\n<script type="text/javascript">{bundle}</script>')


def render_page(title: str, sections: list[Section], header: Html | str = "") -> str:
    """The whole page as one string; `title` and str blocks are escaped here."""
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    parts = []
    for section in sections:
        blocks = []
        for i, block in enumerate(section.blocks):
            if isinstance(block, go.Figure):
                blocks.append(figure_html(block, f"{section.anchor}-{i + 1:02d}"))
            elif isinstance(block, Html):
                blocks.append(block)
            else:
                blocks.append(paragraph(block))
        parts.append(f'<section id="{esc(section.anchor)}"><h2>{esc(section.title)}</h2>'
                     + "\n".join(blocks) + "</section>")
    head_html = header if isinstance(header, Html) else paragraph(header)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<script>{_ERROR_RECORDER}</script>\n<title>{esc(title)}</title>\n"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<style>{_STYLE}</style>\n<script>{_TABLE_SORT}</script>\n"
            f"{_inline_plotlyjs()}\n</head>\n<body>\n<header><h1>{esc(title)}</h1>{head_html}"
            f"<nav>{nav}</nav></header>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def write_page(path: Path | str, text: str) -> Path:
    """Write atomically (temp file, then rename) so a reader never sees half a page."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # a read-only run folder: one line, not a traceback
        raise ProtoscopeError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ProtoscopeError(f"cannot write {path}: {err.strerror or err}") from None
        raise
    return path
