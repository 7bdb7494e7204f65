"""Reports open with their findings: the Findings section precedes the first figure (report
and compare page), the header names a study's protocol and where it differs from the paper,
and a figure with nothing to show for this run is one sentence."""

import json
import re
import shutil

import pandas as pd
import pytest

from protoscope.analysis import findings as fd
from protoscope.analysis.run import run_analyses
from protoscope.geometry.store.runstore import RunStore
from protoscope.reports.compare import build_compare
from protoscope.reports.report import build_report

from synthetic_run import make_synthetic_run
from tiny_run import cli_fitted_run, tiny_run

FIGURE_DIV = '<div class="plot" data-figure='
PROTOCOL = {"name": "connectivity", "settings": {"texts": 3, "seeds": 4, "length": 12},
            "paper": "5 texts x 10 solutions, m shared by a text's seeds",
            "differs": ["model SmolLM2-135M, not Llama-3.2-1B", "3 texts <not 5>"]}


def _body(page) -> str:
    text = page.read_text(encoding="utf-8")
    return text[text.index("<body>"):]


def _opens_with_findings(body: str) -> None:
    findings = body.index('<section id="findings"><h2>Findings</h2>')
    assert findings < body.index(FIGURE_DIV)
    assert findings < body.index("<section", findings + 1)  # the first section of the page
    assert "<th>verdict</th>" in body[findings:body.index(FIGURE_DIV)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("synthetic") / "RUN")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    (run / "manifest.json").write_text(json.dumps({**manifest, "protocol": PROTOCOL}),
                                       encoding="utf-8")
    return run


def test_the_report_opens_with_findings_and_names_the_protocol(synthetic):
    body = _body(build_report(synthetic))
    _opens_with_findings(body)
    header = body[:body.index("</header>")]
    assert "<dd>connectivity</dd>" in header and "texts 3, seeds 4, length 12" in header
    assert "Where this run differs from the paper" in header
    assert "<li>model SmolLM2-135M, not Llama-3.2-1B</li>" in header
    assert "3 texts &lt;not 5&gt;" in header  # escaped like every other string


def test_the_compare_page_opens_with_its_texts_findings(synthetic):
    _opens_with_findings(_body(build_compare(synthetic, "t0")))


def test_a_run_without_a_findings_table_still_opens_with_findings(synthetic, tmp_path):
    run = tmp_path / "RUN"
    shutil.copytree(synthetic, run)
    (run / "analysis" / "findings.parquet").unlink()
    body = _body(build_report(run))
    _opens_with_findings(body)
    assert "curve keeps the text" in body


def test_the_real_tiny_runs_report(tmp_path):
    path, loaded = tiny_run()
    run = tmp_path / "run"
    shutil.copytree(path, run)
    store = RunStore.open(run)
    options = {"connectivity": {"grid": 5, "bezier_steps": 4, "samples_per_step": 1,
                                "check_every": 2, "max_pairs": 1, "cross_text_pairs": 1}}
    run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True, options=options)
    body = _body(build_report(run))
    _opens_with_findings(body)
    assert "straight path keeps the text" in body
    # Every tiny-run solution is exact: its accuracy histogram is one sentence, not one bar.
    assert (store.solutions()["accuracy"] == 1.0).all()
    assert "All 9 solutions reconstruct their text exactly." in body
    assert "<dl class=\"meta\"><dt>protocol" not in body  # no study wrote this run


def test_the_pairs_table_says_which_paths_held(synthetic):
    body = _body(build_report(synthetic))
    pairs = body[body.index('<section id="connectivity">'):]
    assert "<th>held</th><th>status</th><th>steps_used</th>" in pairs


def test_probe_findings_say_the_paper_gives_no_value_not_a_small_n(synthetic):
    body = _body(build_report(synthetic))
    findings = body[body.index('<section id="findings">'):body.index(FIGURE_DIV)]
    probes = [row for row in re.findall(r"<tr>.*?</tr>", findings, re.S) if "probe: " in row]
    assert probes and all("<td>inconclusive: no paper value</td>" in row for row in probes)
    assert any("<td>inconclusive at this n</td>" in row for row in
               re.findall(r"<tr>.*?</tr>", findings, re.S))  # 4 texts: no interval elsewhere


def test_the_protocol_header_prints_both_settings_alike():
    """The run's settings and the paper's read the same way (name value), never as a raw dict;
    a setting the paper leaves unstated says so."""
    from protoscope.reports.report import protocol_header

    html = str(protocol_header({"protocol": {
        "name": "connectivity", "settings": {"pairs": 1, "length": 16},
        "paper": {"pairs": 45, "length": None}, "differs": ["pairs: 1 here, 45 in the paper."]}}))
    assert "pairs 1, length 16" in html and "pairs 45, length not stated" in html, html
    assert "{" not in html and "None" not in html


def _findings_rows(body: str) -> dict[str, str]:
    """The findings table's rows of a page body, by finding."""
    section = body[body.index('<section id="findings">'):body.index("</section>")]
    rows = re.findall(r"<tr>.*?</tr>", section, re.S)
    return {re.sub("<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[0]): r
            for r in rows if "<td" in r}


def test_curves_that_all_failed_are_not_found_within_the_budget_not_disagreeing(synthetic, tmp_path):
    run = tmp_path / "RUN"
    shutil.copytree(synthetic, run)
    store = RunStore.open(run)
    pairs = store.analysis("connectivity_pairs")
    pairs.loc[pairs["path"] == "bezier", "held"] = False
    # one text per same-text pair: enough units for an interval, which lies wholly below 0.5
    own = pairs["same_text"].astype(bool)
    pairs.loc[own, "text_b"] = pairs.loc[own, "text_a"] = [f"p{i}" for i in pairs.loc[own, "pair_id"]]
    store.write_analysis("connectivity_pairs", pairs)
    fd.write(store)
    body = _body(build_report(run))
    curve = _findings_rows(body)["curve keeps the text (share held)"]
    steps = int(pairs["bezier_steps"].max())
    n = int(((pairs["path"] == "bezier") & pairs["same_text"] & (pairs["target"] == "a")).sum())
    assert f"<td>inconclusive: not found within {steps} steps on {n} of {n} pairs</td>" in curve
    assert "<td>bounded search</td>" in curve and "disagrees" not in curve
    assert "<td>[0, 0]</td>" in curve  # an interval: it is the search, not n, that is short
    assert "<th>evidence</th>" in body
    assert "Evidence: an observed row measures fixed objects" in body


def _encoder_started(synthetic, run) -> RunStore:
    """A copy of the synthetic run whose solutions say they started from an encoder, with the
    findings analyze would write for it."""
    shutil.copytree(synthetic, run)
    rows = pd.read_parquet(run / "solutions.parquet").assign(start="encoder:enc")
    rows.to_parquet(run / "solutions.parquet", index=False)
    store = RunStore.open(run)
    fd.write(store)
    return store


LEARNED_VERDICT = "<td>inconclusive: solutions started from a learned encoder</td>"


def test_an_encoder_started_run_says_its_geometry_findings_measure_the_encoder(synthetic, tmp_path):
    _encoder_started(synthetic, tmp_path / "RUN")
    body = _body(build_report(tmp_path / "RUN"))
    note = body.index("Solutions of this run started from a learned encoder (encoder:enc on 12 "
                      "of 12 solutions)")
    assert note < body.index("<th>verdict</th>")  # said above the findings table
    rows = _findings_rows(body)
    for finding in ("same-text solutions closer than different-text",
                    "straight path keeps the text", "curve keeps the text (share held)"):
        assert LEARNED_VERDICT in rows[finding], finding
    assert LEARNED_VERDICT not in rows["capacity (tokens, median over texts)"]
    # asked otherwise, the page gives the ordinary verdicts and says why
    body = _body(build_report(tmp_path / "RUN", allow_learned_starts=True))
    assert LEARNED_VERDICT not in body and "because --allow-learned-starts was given" in body
    # the ordinary verdict of 4 texts: no interval
    assert "<td>inconclusive at this n</td>" in _findings_rows(body)["straight path keeps the text"]


def test_analyze_records_allow_learned_starts_and_report_follows_it(tmp_path, capsys, monkeypatch):
    """A real encoder start on a tiny model, through the command line: fit --init encoder:ENC
    writes each solution's start, analyze and report keep the verdicts inconclusive until
    --allow-learned-starts, which analyze records for report."""
    from protoscope.cli import main
    from protoscope.geometry.starts.names import solution_starts

    from test_runs import appended_rows

    root, model, texts = cli_fitted_run(tmp_path, ["the cat sat on the mat",
                                                   "we went to the city at night"])
    assert main(["encoder", "train", str(root / "run"), "--out", str(root / "enc"),
                 "--kind", "nearest"]) == 0
    run = str(root / "enc-run")
    built = appended_rows(monkeypatch)
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4",
                 "--seeds", "2", "--out", run, "--max-steps", "150", "--quiet",
                 "--init", f"encoder:{root / 'enc'}"]) == 0
    assert [r["start"] for r in built] == ["encoder:enc"] * 4  # the rows fit wrote
    store = RunStore.open(run)  # kept, or read from the manifest where the store drops it
    assert list(solution_starts(store.solutions(), store.manifest)) == ["encoder:enc"] * 4
    budget = ["--only", "connectivity", "--pairs", "1", "--grid", "5", "--bezier-steps", "2",
              "--samples-per-step", "1", "--check-every", "1", "--cross-text-pairs", "0",
              "--quiet"]
    assert main(["analyze", run, *budget]) == 0
    assert "inconclusive (solutions started from a learned encoder)" in capsys.readouterr().out
    store = RunStore.open(run)
    assert store.manifest["allow_learned_starts"] is False
    straight = store.analysis("findings").set_index("finding").loc["straight path keeps the text"]
    assert straight["verdict"] == "inconclusive" and straight["detail"].startswith(fd.LEARNED_START)
    assert main(["report", run]) == 0
    assert LEARNED_VERDICT in _findings_rows(_body(root / "enc-run" / "report.html"))[
        "straight path keeps the text"]
    assert main(["report", run, "--allow-learned-starts"]) == 0  # this page only
    assert LEARNED_VERDICT not in _body(root / "enc-run" / "report.html")
    assert RunStore.open(run).manifest["allow_learned_starts"] is False
    assert main(["analyze", run, *budget, "--allow-learned-starts"]) == 0
    store = RunStore.open(run)
    assert store.manifest["allow_learned_starts"] is True
    assert not store.analysis("findings")["detail"].str.startswith(fd.LEARNED_START).any()
    assert main(["report", run]) == 0  # follows what analyze recorded
    body = _body(root / "enc-run" / "report.html")
    assert LEARNED_VERDICT not in body and "because --allow-learned-starts was given" in body
