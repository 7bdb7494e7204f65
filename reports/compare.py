"""How do the solutions of one text compare? `build_compare` writes RUN/compare-TEXT.html.

All solutions of the text side by side: their pairwise cosine distances, whether each pair
stays connected on a linear and on a Bezier path, which positions each solution gets right,
and for one pair the tokens decoded along its paths. It opens with the findings about this
text's solutions (pairs resampled: analysis/findings.py `text_findings`). Reads tables, never
runs a model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..analysis.findings import text_findings
from ..geometry.errors import ProtoscopeError
from . import figures_compare as fc
from . import figures_dimension as dim
from .figures import esc
from .page import Html, Section, html_table, meta_list, render_page, write_page
from .report import findings_table, learned_starts_note, open_run

_SHOWN_IDS = 8  # how many known ids an "unknown text id" message lists
_SOLUTION_COLUMNS = ["solution_id", "seed", "length", "arrangement", "share", "method",
                     "accuracy", "c_tokens", "loss", "steps", "status"]


def build_compare(run_dir: Path | str, text_id, pair_id=None) -> Path:
    """Write RUN/compare-TEXT_ID.html for one text; returns its path.

    `pair_id` picks the pair whose decoded path tokens are shown (default: the pair of this
    text with the lowest accuracy on the linear path). Raises ProtoscopeError for an unknown
    text id (naming a few known ones) or a pair that does not belong to the text.
    """
    run_dir = Path(run_dir)
    store = open_run(run_dir)
    text_id = resolve_text_id(store, text_id)
    sections = compare_sections(store, text_id, pair_id)
    page = render_page(f"protoscope compare: text {text_id}", sections,
                       text_header(store, text_id))
    return write_page(run_dir / f"compare-{file_safe(text_id)}.html", page)


def file_safe(text_id: str) -> str:
    """A text id as a file-name part: ids come from user files and may hold '/' or spaces."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text_id).lstrip(".") or "_"


def resolve_text_id(store, text_id) -> str:
    """The text id as stored (ids are compared as strings), or ProtoscopeError naming some."""
    known = list(dict.fromkeys(store.texts_frame()["text_id"].astype(str)))
    if str(text_id) in known:
        return str(text_id)
    listed = ", ".join(known[:_SHOWN_IDS]) + (f", ... ({len(known)} in all)"
                                              if len(known) > _SHOWN_IDS else "")
    raise ProtoscopeError(f"unknown text id {str(text_id)!r}; known ids: {listed or 'none'}")


def _text_rows(frame: pd.DataFrame | None, column: str, text_id: str) -> pd.DataFrame | None:
    if frame is None or column not in frame.columns:
        return None
    return frame[frame[column].astype(str) == text_id]


def text_header(store, text_id: str) -> Html:
    """The text in full and its facts, escaped."""
    row = _text_rows(store.texts_frame(), "text_id", text_id).iloc[0]
    facts = {k: row[k] for k in ("source", "context_id", "n_tokens")
             if k in row.index and pd.notna(row[k])}
    solutions = _text_rows(store.solutions(), "text_id", text_id)
    facts["solutions"] = 0 if solutions is None else len(solutions)
    text = Html(f'<blockquote style="white-space: pre-wrap">'
                f'{esc(row.get("text", ""))}</blockquote>')
    return Html(text + meta_list({"text id": text_id, **facts}))


def pairs_of(pairs: pd.DataFrame | None, solution_ids: list) -> pd.DataFrame | None:
    """Connectivity pairs whose two solutions both belong to the text."""
    if pairs is None or not {"solution_a", "solution_b"} <= set(pairs.columns):
        return None
    rows = pairs[pairs["solution_a"].isin(solution_ids) & pairs["solution_b"].isin(solution_ids)]
    return rows if len(rows) else None


def choose_pair(pairs: pd.DataFrame | None, pair_id=None):
    """The pair to show along its path: `pair_id` if given, else the weakest linear pair."""
    if pair_id is not None:
        known = [] if pairs is None else list(dict.fromkeys(pairs["pair_id"]))
        for candidate in known:
            if str(candidate) == str(pair_id):
                return candidate
        listed = ", ".join(map(str, known[:_SHOWN_IDS])) or "none"
        raise ProtoscopeError(f"pair {pair_id!r} is not a pair of this text; its pairs: "
                              f"{listed}")
    if pairs is None or "min_accuracy" not in pairs.columns:
        return None
    linear = pairs[pairs["path"].astype(str) == "linear"] if "path" in pairs.columns else pairs
    ranked = (linear if len(linear) else pairs).sort_values(["min_accuracy", "pair_id"])
    return ranked["pair_id"].iloc[0]


def compare_sections(store, text_id: str, pair_id=None) -> list[Section]:
    """The compare page's sections (usable from a notebook without writing HTML)."""
    solutions = _text_rows(store.solutions(), "text_id", text_id)
    ids = [] if solutions is None else sorted(solutions["solution_id"].tolist())
    pairs = pairs_of(store.analysis("connectivity_pairs"), ids)
    chosen = choose_pair(pairs, pair_id)
    tokens = store.analysis("connectivity_tokens")
    sections = [
        text_findings_section(store, text_id),
        Section("solutions", "Solutions",
                [html_table(solutions, _SOLUTION_COLUMNS, empty="No solutions of this text.")]),
        Section("distances", "Distances", [fc.distance_heatmap(store.analysis("uniqueness"), ids)]),
        Section("connectivity", "Connectivity", [fc.connectivity_matrix(pairs, ids)]),
        Section("positions", "Positions", [fc.position_correctness(store.analysis("positions"),
                                                                   ids)]),
    ]
    if chosen is None:
        path_blocks = ["No connectivity pairs between solutions of this text."]
    else:
        path_blocks = [Html(f"<p>Pair {esc(chosen)} "
                            f"{_pair_label(pairs, chosen)}.</p>"),
                       fc.path_tokens(tokens, chosen, "linear"),
                       fc.path_tokens(tokens, chosen, "bezier")]
    sections.append(Section("path", "Along a path", path_blocks))
    points = store.analysis("trajectory_points")
    if points is not None and len(points):  # a run that kept its optimisation paths
        sections.append(Section("trajectories", "Optimisation paths",
                                [dim.text_paths(points, text_id)]))
    return sections


def text_findings_section(store, text_id: str) -> Section:
    table = text_findings(store.analysis, store.solutions(), store.manifest or {}, text_id)
    return Section("findings", "Findings", learned_starts_note(store) + [findings_table(
        table, "No table of this run answers a question about this text yet.")])


def _pair_label(pairs: pd.DataFrame, pair_id) -> str:
    row = pairs[pairs["pair_id"] == pair_id].iloc[0]
    return esc(f"joins solutions #{row['solution_a']} and #{row['solution_b']}")
