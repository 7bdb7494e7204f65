"""What does a whole run look like? `build_report` turns a run store into RUN/report.html.

The page opens with the run's findings (analysis/findings.py: estimate, 95% interval, n, the
paper's value, verdict) and, when a study wrote one, its protocol and where it differs from
the paper's; then sections follow the paper's questions: overview, capacity, non-uniqueness,
connectivity, neighbourhoods, information. A figure that carries no information for this run
(every solution at accuracy 1.0) is one sentence instead. Every figure comes from a builder in `figures_*.py` fed with a
table of the run store; this module only chooses which tables go where. It reads tables and
never runs a model. `build_report(..., static="png")` also writes each figure to RUN/figures/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..analysis.findings import (allows_learned_starts, findings, inconclusive_reason,
                                 learned_starts, paper_silent)
from ..geometry.store.runstore import RunStore
from ..geometry.tables import read
from . import figures_capacity as cap
from . import figures_connectivity as conn
from . import figures_dimension as dim
from . import figures_information as info
from . import figures_neighbourhoods as hood
from . import figures_uniqueness as uniq
from .figures import esc, no_data_reason
from .figures_export import check_format, export_figures
from .page import (Html, Section, figures_of, html_table, meta_list, paragraph, render_page,
                   write_page)

_SOLUTION_COLUMNS = ["solution_id", "text_id", "seed", "length", "arrangement", "share",
                     "method", "recipe", "accuracy", "c_tokens", "loss", "steps", "restarts",
                     "seconds", "status", "failure"]
_PAIR_COLUMNS = read("connectivity_pairs", "pair_id", "path", "text_a", "text_b", "solution_a",
                     "solution_b", "same_text", "moved", "held", "status", "steps_used",
                     "min_accuracy", "barrier", "length_ratio", "worst_t", "worst_text")


def open_run(run_dir: Path | str) -> RunStore:
    """The run store at run_dir (StoreError, one line, when it is not one or is damaged)."""
    return RunStore.open(run_dir)


def build_report(run_dir: Path | str, static: str | None = None,
                 allow_learned_starts: bool | None = None) -> Path:
    """Write RUN/report.html (and RUN/figures/*.FORMAT when `static` is png, svg or pdf).

    `allow_learned_starts` (None: the manifest's choice, as `analyze` recorded it) gives a run
    whose solutions started from a learned encoder ordinary verdicts (analysis/findings.py).
    Returns the path of the page. Raises ProtoscopeError (or its StoreError) when the folder
    is not a run store, `static` is not a known format, or static export finds no browser.
    """
    check_format(static)
    run_dir = Path(run_dir)
    store = open_run(run_dir)
    sections = report_sections(store, allow_learned_starts)
    page = render_page(f"protoscope report: {run_dir.resolve().name}", sections, run_header(store))
    path = write_page(run_dir / "report.html", page)
    if static is not None:
        export_figures(figures_of(sections), run_dir / "figures", static)
    return path


def report_sections(store, allow_learned_starts: bool | None = None) -> list[Section]:
    """The report's sections, in reading order (usable from a notebook without writing HTML)."""
    return [findings_section(store, allow_learned_starts), overview(store), capacity(store),
            uniqueness(store), connectivity(store), neighbourhoods(store), information(store),
            shape(store)]


def run_findings(store, allow_learned_starts: bool | None = None) -> pd.DataFrame:
    """The run's findings table; built from its tables (it reads tables only) when analyze has
    not written it (a capacity run, an older run), when the stored one predates the `evidence`
    column (and so its verdict rule), or when `allow_learned_starts` asks otherwise than the
    manifest's choice the stored table was built under."""

    manifest = store.manifest or {}
    allow = allows_learned_starts(manifest, allow_learned_starts)
    table = store.analysis("findings")
    if table is None or "evidence" not in table.columns or \
            allow != allows_learned_starts(manifest):
        table = findings(store.analysis, store.solutions(), manifest, allow_learned_starts=allow)
    return table


def findings_table(table: pd.DataFrame, empty: str) -> Html:
    """Findings as a table a reader scans first: interval beside the estimate, verdict last."""

    if table is None or table.empty:
        return paragraph(empty, "no-data")
    silent, reason = paper_silent(table), inconclusive_reason(table)

    def num(v) -> str:
        return "" if v is None or v != v else f"{float(v):.3g}"

    shown = pd.DataFrame({
        "finding": table["finding"],
        "estimate": [num(v) for v in table["estimate"]],
        "95% interval": [f"[{num(lo)}, {num(hi)}]" if lo == lo and hi == hi else "none at this n"
                         for lo, hi in zip(table["low"], table["high"])],
        "n": [f"{int(n)} {u}" for n, u in zip(table["n"], table.get("unit", [""] * len(table)))],
        "paper": [num(v) for v in table["paper"]],
        "the paper says": table.get("claim", ""),
        "evidence": table.get("evidence", ""),
        "verdict": [v if v != "inconclusive" else f"inconclusive: {why}" if why
                    else "inconclusive: no paper value" if quiet else "inconclusive at this n"
                    for v, quiet, why in zip(table["verdict"], silent, reason)],
        "how measured": table.get("detail", ""),
    })
    return html_table(shown, text_columns=("finding", "the paper says", "how measured"),
                      text_limit=200)


def findings_section(store, allow_learned_starts: bool | None = None) -> Section:
    blocks = learned_starts_note(store, allow_learned_starts)
    blocks += [findings_table(run_findings(store, allow_learned_starts),
                              "No findings yet: run `protoscope analyze` on this run."),
               paragraph("Verdicts: agrees when the whole 95% interval lies on the paper's "
                         "side, disagrees when it lies on the other side, inconclusive when it "
                         "straddles or there are too few texts for an interval, and where the "
                         "paper gives no value (the probes, capacity on a model it did not "
                         "run): there, 'how measured' says what the run found.", "no-data"),
               paragraph("Evidence: an observed row measures fixed objects (the straight "
                         "path, distances, radii, the curves that were found) and can agree or "
                         "disagree; a bounded-search row claims that something exists (a curve "
                         "that keeps the text, a capacity), which a search can confirm but, "
                         "stopping at its budget, never refute: when it did not find it, the "
                         "verdict is inconclusive and names the budget ('not found within B "
                         "steps on k of n pairs'; capacity: a lower bound).", "no-data")]
    return Section("findings", "Findings", blocks)


def learned_starts_note(store, allow_learned_starts: bool | None = None) -> list[Html]:
    """One sentence above the findings when solutions started from a learned encoder."""

    manifest = store.manifest or {}
    starts = learned_starts(store.solutions(), manifest)
    if not starts:
        return []
    if allows_learned_starts(manifest, allow_learned_starts):
        then = ("their verdicts are the ordinary ones here, because --allow-learned-starts "
                "was given")
    else:
        then = ("they are inconclusive here; `protoscope analyze` or `report` with "
                "--allow-learned-starts gives their ordinary verdicts")
    return [paragraph(f"Solutions of this run started from a learned encoder ({starts}): a "
                      f"text's seeds start near one point, so the uniqueness, connectivity "
                      f"and probe findings measure the encoder, not the solution space; "
                      f"{then}.", "learned-starts")]


def _model_name(manifest: dict) -> str:
    model = manifest.get("model")
    if isinstance(model, dict):
        return str(model.get("id") or model.get("name") or model.get("source") or model)
    return str(model) if model is not None else "unknown"


def run_header(store) -> Html:
    """Model, recipe, arrangement and state of the run, from its manifest (all escaped)."""
    manifest = store.manifest or {}
    config = manifest.get("config") or {}
    texts, solutions = store.texts_frame(), store.solutions()
    return Html(protocol_header(manifest) + meta_list({
        "model": _model_name(manifest),
        "recipe": config.get("recipe", "unknown"),
        "arrangement": config.get("arrangement", "unknown"),
        "status": manifest.get("status", "unknown"),
        "created": manifest.get("created", ""),
        "updated": manifest.get("updated", ""),
        "texts / solutions": f"{len(texts)} / {len(solutions)}",
    }))


def protocol_header(manifest: dict) -> Html:
    """The study's protocol (manifest["protocol"]): name, settings, where it differs from the
    paper's. Empty for a run that no study wrote."""
    protocol = manifest.get("protocol")
    if not isinstance(protocol, dict):
        return Html("")
    items = {"protocol": protocol.get("name", "unknown"),
             "settings": _settings_text(protocol.get("settings") or {})}
    if protocol.get("paper"):
        items["the paper's"] = _settings_text(protocol["paper"])
    differs = protocol.get("differs") or []
    listed = "".join(f"<li>{esc(d)}</li>" for d in differs)
    where = (f'<p><b>Where this run differs from the paper:</b></p><ul class="differs">{listed}'
             f"</ul>" if differs else "<p>This run follows the paper's protocol.</p>")
    return Html(f'<div class="protocol">{meta_list(items)}{where}</div>')


def _settings_text(settings) -> str:
    """`name value, ...` of a settings dict (the paper's unstated ones as "not stated")."""
    if not isinstance(settings, dict):
        return str(settings)
    return ", ".join(f"{k} {'not stated' if v is None else v}" for k, v in settings.items())


def _section(anchor: str, title: str, blocks: list, empty: str) -> Section:
    """A section; when none of its figures has data and it has no table, one sentence."""
    has_data = any(not isinstance(b, go.Figure) or no_data_reason(b) is None for b in blocks)
    return Section(anchor, title, blocks if has_data else [empty])


def _table(frame: pd.DataFrame | None, columns: list[str], **options) -> list[Html]:
    """A table block only when the run has that table (absent tables say so in figures)."""
    if frame is None or frame.empty:
        return []
    return [html_table(frame, columns, **options)]


def overview(store) -> Section:
    texts, solutions = store.texts_frame(), store.solutions()
    text_columns = ["text_id", "source", "context_id", "n_tokens", "text"]
    blocks = [Html("<h3>Texts</h3>"),
              html_table(texts, text_columns, text_columns=("text",), empty="No texts.")]
    blocks += [Html("<h3>Solutions</h3>"),
               html_table(solutions, _SOLUTION_COLUMNS, text_columns=("failure",),
                          empty="No solutions in this run yet.")]
    blocks += [cap.accuracy_distribution(solutions), cap.steps_distribution(solutions)]
    return Section("overview", "Overview", blocks)


def capacity(store) -> Section:
    table, information_table = store.analysis("capacity"), store.analysis("information")
    blocks = [cap.capacity_curves(table), cap.capacity_by_source(table),
              cap.hlm_vs_capacity(information_table, table), cap.one_step_vs_mem(table)]
    return _section("capacity", "Capacity", blocks,
                    "No capacity search or information analysis in this run.")


def uniqueness(store) -> Section:
    pairs, bins = store.analysis("uniqueness"), store.analysis("uniqueness_bins")
    blocks = [uniq.distance_by_pair_kind(pairs),
              uniq.distance_vs_text_distance(pairs, "tfidf", bins=bins),
              uniq.distance_vs_text_distance(pairs, "semantic", bins=bins)]
    summary = store.analysis("uniqueness_summary")
    blocks += [Html("<h3>Which pairs are closer (AUC)</h3>")] if summary is not None else []
    blocks += _table(summary, read("uniqueness_summary", "vector", "comparison", "auc", "p_value",
                                        "n_a", "n_b"))
    return _section("uniqueness", "Non-uniqueness", blocks, "No uniqueness analysis in this run.")


def connectivity(store) -> Section:
    paths, pairs = store.analysis("connectivity"), store.analysis("connectivity_pairs")
    blocks = [conn.path_accuracy(paths, "linear"), conn.path_accuracy(paths, "bezier"),
              conn.pair_summary(pairs, "barrier"), conn.pair_summary(pairs, "length_ratio")]
    blocks += [Html("<h3>Pairs</h3>")] if pairs is not None else []
    blocks += _table(pairs, _PAIR_COLUMNS, text_columns=("worst_text",), text_limit=60)
    return _section("connectivity", "Connectivity", blocks,
                    "No connectivity analysis in this run.")


def _maps(maps: pd.DataFrame | None, texts: pd.DataFrame) -> list[go.Figure]:
    """One map per (method, vector) the table holds; a no-data note when it holds none."""
    if maps is None or not {"method", "vector"} <= set(maps.columns) or maps.empty:
        return [hood.solution_map(None)]
    combos = maps[["method", "vector"]].astype(str).drop_duplicates()
    order = {"pca": 0, "umap": 1}
    combos = sorted(combos.itertuples(index=False), key=lambda c: (order.get(c[0], 2), c))
    return [hood.solution_map(maps, texts, vector=v, method=m) for m, v in combos]


def neighbourhoods(store) -> Section:
    blocks = [hood.accuracy_vs_radius(store.analysis("neighbourhoods")),
              hood.radius_vs_nearest(store.analysis("neighbourhood_radii"))]
    blocks += _maps(store.analysis("maps"), store.texts_frame())
    purity = store.analysis("neighbourhood_purity")
    blocks += [Html("<h3>Do neighbours share a text? (k-NN purity)</h3>")] \
        if purity is not None else []
    blocks += _table(purity, read("neighbourhood_purity", "vector", "k", "purity", "silhouette"))
    return _section("neighbourhoods", "Neighbourhoods", blocks,
                    "No neighbourhood analysis in this run.")


def information(store) -> Section:
    prompting = store.analysis("prompting")
    blocks = [info.probe_scores(store.analysis("probes")),
              info.bits_per_dimension(store.analysis("information")),
              info.attention_by_layer(store.analysis("attention")),
              info.prompting_overlap(prompting),
              info.throughput(store.analysis("throughput"))]
    blocks += [Html("<h3>What the model writes when the vectors are a prompt</h3>")] \
        if prompting is not None else []
    blocks += _table(prompting, read("prompting", "solution_id", "text_id", "token_overlap",
                                     "continuation"),
                     text_columns=("continuation",), max_rows=200)
    return _section("information", "Information", blocks, "No information analysis in this run.")



def shape(store) -> Section:
    """The shape of the solution set: intrinsic dimension, the local spectrum, the
    optimiser's paths."""
    table = store.analysis("spectrum")
    blocks = [dim.reconstruction_vs_dim(store.analysis("dimension")),
              dim.dimension_vs_hlm(store.analysis("intrinsic_dimension")),
              dim.eigenvalue_spectra(store.analysis("spectrum_eigenvalues")),
              dim.stiff_vs_radius(table, store.analysis("neighbourhood_radii")),
              dim.path_variance(store.analysis("trajectories")),
              dim.path_accuracy(store.analysis("trajectory_points"))]
    blocks += [Html("<h3>Stiff directions per solution</h3>")] if table is not None else []
    blocks += _table(table, read("spectrum", "solution_id", "text_id", "block", "dimension", "k",
                                 "top", "threshold", "stiff", "stiff_censored", "converged",
                                 "products", "seconds"))
    return _section("shape", "Shape: dimension, local spectrum, optimisation paths", blocks,
                    "No subspace fits (fit --subspace K), no spectrum analysis (analyze --only "
                    "spectrum) and no trajectories (fit --trajectory-every K) in this run.")
