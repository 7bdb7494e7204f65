"""What did a whole sweep find? The sweep's page: DIR/report.html for `protoscope report DIR`.

Reads DIR/sweep.json and DIR/results.parquet (never runs a model): the paper's capacity table
(models x text sources, m shared and not: the longest prefix reconstructed per text, best of
its seeds, averaged over the texts of a source), capacity vs H_LM per model (each text of the
capacity-grid jobs: its capacity against the H_LM of the prefix it reconstructed, the paper's
"capacity is bounded by information content"), steps and seconds per model, and every job with
its status and a link to its own report (built here when the job has solutions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..geometry.errors import ProtoscopeError
from ..geometry.tables import capacity_of, reconstructed
from .figures import esc
from .figures_sweep import capacity_vs_hlm, symbol_key
from .page import Html, Section, html_table, meta_list, paragraph, render_page, write_page
from .report import build_report


def is_sweep(folder: Path | str) -> bool:
    return (Path(folder) / "sweep.json").is_file()


def capacity_table(results: pd.DataFrame, statuses: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean capacity (tokens) per model x source x share, over the texts; `texts` counts them.
    One-step solutions only: a grid run with `capacity_method = "both"` also stores the [mem]
    baseline's, which is another method's capacity. `partial` is True where a job behind the
    row has not finished (`statuses`: job id -> its sweep.json status): a grid stopped mid-climb
    has not tried every length, so its capacity is a lower bound."""
    results = _one_step(results)
    if results.empty:
        return pd.DataFrame(columns=["model", "source", "share", "capacity", "texts", "partial"])
    keys = ["model", "source", "share"]
    per_text = capacity_of(results, [*keys, "text_id"])
    table = (per_text.groupby(keys, sort=False)["capacity"]
             .agg(capacity="mean", texts="size").reset_index())
    unfinished = set()
    if statuses is not None and "job" in results.columns:
        jobs = results.drop_duplicates([*keys, "job"])
        unfinished = {tuple(k) for k, job in zip(jobs[keys].itertuples(index=False, name=None), jobs["job"])
                      if statuses.get(str(job)) != "done"}
    table["partial"] = [tuple(k) in unfinished for k in table[keys].itertuples(index=False, name=None)]
    return table


def capacity_vs_hlm_table(results: pd.DataFrame) -> pd.DataFrame | None:
    """Per (model, share, text) of the capacity-grid jobs (one-step method): `capacity` (longest
    prefix reconstructed by any seed, tokens) and `h_lm_nats` (H_LM of that prefix under the
    model; 0 when nothing was reconstructed). None when results.parquet predates its H_LM
    column (running the sweep again rewrites it)."""
    keys = ["model", "share", "source", "text_id"]
    if results.empty or "h_lm_nats" not in results.columns:
        return None
    rows = _one_step(results[results["kind"].astype(str) == "capacity"])
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "capacity", "h_lm_nats"])
    per_text = capacity_of(rows, keys)
    # H_LM is a property of the text's prefix, the same for every seed that reached it.
    at = rows.drop_duplicates([*keys, "length"]).set_index([*keys, "length"])["h_lm_nats"]
    per_text["h_lm_nats"] = [0.0 if n == 0 else float(at.get((*k, n), float("nan")))
                             for k, n in zip(per_text[keys].itertuples(index=False, name=None),
                                             per_text["capacity"])]
    return per_text


def _one_step(results: pd.DataFrame) -> pd.DataFrame:
    if "method" not in results.columns:
        return results
    return results[results["method"].astype(str) == "one-step"]


def hlm_summary(per_text: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per model x source x share: texts, mean capacity (tokens), mean H_LM at capacity (nats)
    and nats per reconstructed token (over the texts that reconstructed something)."""
    if per_text is None or per_text.empty:
        return None
    held = per_text.assign(nats_per_token=per_text["h_lm_nats"]
                           / per_text["capacity"].where(per_text["capacity"] > 0))
    return (held.groupby(["model", "source", "share"], sort=False)
            .agg(texts=("text_id", "size"), capacity_tokens=("capacity", "mean"),
                 h_lm_nats=("h_lm_nats", "mean"), nats_per_token=("nats_per_token", "mean"))
            .reset_index())


def per_model(results: pd.DataFrame) -> pd.DataFrame:
    """Solutions, share exact, median steps and seconds per model and length."""
    if results.empty:
        return pd.DataFrame()
    grouped = results.assign(exact=reconstructed(results["accuracy"])).groupby(
        ["model", "length"], sort=False)
    return grouped.agg(solutions=("accuracy", "size"), exact=("exact", "mean"),
                       median_steps=("steps", "median"), median_seconds=("seconds", "median"),
                       mean_accuracy=("accuracy", "mean")).reset_index()


def build_sweep_report(folder: Path | str, job_reports: bool = True) -> Path:
    """Write DIR/report.html (and each job's own report unless `job_reports` is False)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "sweep.json").read_text())
    except (OSError, ValueError):
        raise ProtoscopeError(f"{folder / 'sweep.json'} is unreadable") from None
    path = folder / "results.parquet"
    results = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    jobs = pd.DataFrame(state.get("jobs", []))
    links = []
    for job in state.get("jobs", []):
        links.append(_job_report(folder, job) if job_reports else None)
    table = capacity_table(results, {str(j.get("id")): j.get("status") for j in state.get("jobs", [])})
    wide = (table.pivot_table(index="model", columns=["source", "share"], values="capacity",
                              sort=False) if not table.empty else None)
    if wide is not None:
        wide.columns = [f"{source} (share {share})" for source, share in wide.columns]
        wide = wide.reset_index()
    partial = table[table["partial"]] if not table.empty else table
    partial_note = (paragraph(f"Partial ({len(partial)} of {len(table)} rows, marked in the "
                              f"table below): a job behind them has not finished, so their "
                              f"capacity is a lower bound until the sweep runs again.")
                    if len(partial) else Html(""))
    sections = [
        Section("capacity", "Capacity: models x text sources, m shared and not", [
            paragraph("Longest prefix length (tokens) reconstructed exactly, best of the seeds, "
                      "averaged over the texts of each source; only the lengths the sweep tried "
                      "count."),
            html_table(wide, empty="No solutions yet."),
            partial_note,
            html_table(table, empty="No solutions yet."),
        ]),
        _hlm_section(results),
        Section("models", "Steps and seconds per model", [
            html_table(per_model(results), empty="No solutions yet.")]),
        Section("jobs", "Jobs", [_jobs_table(jobs, links)]),
    ]
    counts = jobs["status"].value_counts().to_dict() if "status" in jobs else {}
    header = meta_list({"sweep file": state.get("file") or "", "created": state.get("created", ""),
                        "updated": state.get("updated", ""), "jobs": len(jobs),
                        "status": ", ".join(f"{v} {k}" for k, v in counts.items()),
                        "solutions": len(results)})
    page = render_page(f"protoscope sweep: {folder.resolve().name}", sections, header)
    return write_page(folder / "report.html", page)


def _hlm_section(results: pd.DataFrame) -> Section:
    title = "Capacity vs H_LM per model"
    per_text = capacity_vs_hlm_table(results)
    if per_text is None and not results.empty:
        return Section("hlm", title, [paragraph(
            "results.parquet has no H_LM column (written by an older protoscope): run the same "
            "sweep command again to rewrite it; nothing is fitted again.", "no-data")])
    return Section("hlm", title, [
        paragraph("Each text of the capacity-grid jobs (one-step method): its capacity (tokens, "
                  "best of its seeds) against the H_LM of the prefix it reconstructed (nats: the "
                  "model's own negative log-likelihood of those tokens). If capacity is bounded "
                  "by information content, a model's texts of higher NLL per token reconstruct "
                  "fewer tokens at a similar H_LM."),
        capacity_vs_hlm(per_text),
        paragraph(symbol_key(per_text)) if per_text is not None and len(per_text) else Html(""),
        html_table(hlm_summary(per_text), empty="No capacity-grid jobs with solutions yet."),
    ])


def _job_report(folder: Path, job: dict) -> str | None:
    run = folder / job["run"]
    if not ((run / "solutions.parquet").exists() or (run / "parts" / "index.json").exists()):
        return None  # no solution stored yet (a job in flight stores parts, store.py)
    try:
        build_report(run)
    except ProtoscopeError:
        return None
    return f"{job['run']}/report.html"


def _jobs_table(jobs: pd.DataFrame, links: list[str | None]) -> Html:
    if jobs.empty:
        return paragraph("No jobs.", "no-data")
    rows = []
    for (_, job), link in zip(jobs.iterrows(), links):
        name = (f'<a href="{esc(link)}">{esc(job["id"])}</a>' if link else esc(job["id"]))
        cells = [name] + [esc(job.get(c, "")) for c in ("model", "texts", "share", "status")]
        cells += [esc(job.get("solutions", "")), esc(job.get("seconds", "")),
                  esc(job.get("worker", "")), esc(job.get("error") or "")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("job (its report)", "model", "texts", "share",
                                             "status", "solutions", "seconds", "worker", "error"))
    return Html(f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table></div>')
