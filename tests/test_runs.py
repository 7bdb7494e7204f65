"""The one fit-run sequence: does `fit_run` fill a run, report progress, resume without refitting,
mark the run complete and keep its thread count; and does the demo reach it without importing
the command layer?"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.runs.fit import RunConfig, fit_run, use_threads
from protoscope.geometry.store.runstore import RunStore



class Calls:
    def __init__(self):
        self.texts, self.problems, self.groups, self.steps = [], [], 0, 0

    def kwargs(self) -> dict:
        return {"on_texts": lambda *a: self.texts.append(a), "on_problems": self.problems.append,
                "on_group": self.count_group, "on_step": self.count_step}

    def count_group(self, group):
        self.groups += len(group.solutions)

    def count_step(self, acc):
        assert acc.ndim == 1 and len(acc) >= 1
        self.steps += 1


def test_fit_run_fills_reports_and_completes_the_run(config, fit_llama, tmp_path):
    calls = Calls()
    fitted = fit_run(tmp_path / "run", config, loaded=fit_llama, **calls.kwargs())
    rows = RunStore.open(tmp_path / "run").solutions()
    assert len(rows) == len(fitted.new_rows) == 6
    assert calls.problems == [6] and calls.groups == 6 and calls.steps > 0
    assert ("tokenised", 3, 3) in calls.texts and calls.texts[-1] == ("scored", 3, 3)
    manifest = fitted.store.manifest
    assert manifest["status"] == "complete"
    assert manifest["threads"] == {"fit": torch.get_num_threads()}
    assert all(t.token_nll is not None for t in fitted.texts)


def test_fit_run_resumes_only_what_is_missing(config, fit_llama, tmp_path):
    out = tmp_path / "run"

    def stop(group):  # interrupted right after the first group was stored
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_run(out, config, loaded=fit_llama, on_group=stop)
    assert len(RunStore.open(out).solutions()) == 1
    assert RunStore.open(out).manifest["status"] == "running"
    calls = Calls()
    again = fit_run(out, config, loaded=fit_llama, **calls.kwargs())
    assert calls.problems == [5] and calls.groups == 5 and len(again.new_rows) == 5
    rows = RunStore.open(out).solutions()
    assert len(rows) == 6 and not rows.duplicated(["text_id", "seed", "length"]).any()
    assert again.store.manifest["status"] == "complete"


def test_a_finished_run_fits_nothing_again(config, fit_llama, tmp_path):
    out = tmp_path / "run"
    fit_run(out, config, loaded=fit_llama)
    before = RunStore.open(out).solutions()
    calls = Calls()
    again = fit_run(out, config, loaded=fit_llama, **calls.kwargs())
    assert calls.problems == [0] and calls.steps == 0 and again.new_rows.empty
    assert RunStore.open(out).solutions().equals(before)


def test_fit_run_takes_the_lock_unless_told_the_caller_holds_it(config, fit_llama, tmp_path):
    out = tmp_path / "run"
    with RunStore(out).lock():
        with pytest.raises(ProtoscopeError, match="in use"):
            fit_run(out, config, loaded=fit_llama)
        assert len(fit_run(out, config, loaded=fit_llama, lock=False).new_rows) == 6


def test_use_threads():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 == torch.get_num_threads()
        assert use_threads(None) == 1
        with pytest.raises(ProtoscopeError, match="--threads must be at least 1, got 0"):
            use_threads(0)
    finally:
        torch.set_num_threads(before)


def test_the_studies_do_not_import_the_command_layer():
    code = ("import sys, protoscope.workflows.studies; "
            "sys.exit('protoscope.commands' in sys.modules or 'protoscope.cli' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_texts_are_scored_only_up_to_the_longest_fitted_prefix(config, fit_llama, tmp_path):
    from protoscope.geometry.runs.fit import prepare_run
    from protoscope.geometry.store.scoring import ensure_scored
    from protoscope.geometry.store.texts import token_nll

    calls = Calls()
    store, _, texts = prepare_run(tmp_path / "run", config, loaded=fit_llama,
                                  on_texts=calls.kwargs()["on_texts"])
    assert all(t.token_nll is None for t in texts) and not [c for c in calls.texts if c[0] == "scored"]
    texts = ensure_scored(store, fit_llama, progress=calls.kwargs()["on_texts"])
    assert [len(t.token_nll) for t in texts] == [3, 3, 3] and all(t.n_tokens > 3 for t in texts)
    assert [t.token_nll for t in store.texts()] == [t.token_nll for t in texts]
    whole = token_nll(fit_llama, [t.token_ids for t in texts])
    for text, full in zip(texts, whole):
        assert len(full) == text.n_tokens
        assert text.h_lm(3) == pytest.approx(float(full[:3].sum()), rel=1e-5)
    assert [c for c in calls.texts if c[0] == "scored"][-1] == ("scored", 3, 3)


def test_a_mix_keeps_only_its_texts_and_scores_none(fit_llama, tmp_path):
    from protoscope.geometry.runs.fit import load_text_mix

    calls = Calls()
    texts = load_text_mix(RunConfig(texts="builtin:2", lengths=(4,)), fit_llama,
                          on_texts=calls.kwargs()["on_texts"])
    assert len(texts) == 2 and all(t.token_nll is None for t in texts)
    assert [c for c in calls.texts if c[0] == "scored"] == []


def test_a_text_too_short_is_refused_before_scoring(config, fit_llama, tmp_path, monkeypatch):
    def token_nll(*args, **kwargs):
        raise AssertionError("texts were scored before their lengths were checked")

    monkeypatch.setattr("protoscope.geometry.store.scoring.token_nll", token_nll)
    too_long = RunConfig(model="tiny", texts=config.texts, seeds=1, lengths=(3, 40))
    with pytest.raises(ProtoscopeError, match="a prefix of 40"):
        fit_run(tmp_path / "run", too_long, loaded=fit_llama)


def appended_rows(monkeypatch) -> list[dict]:
    """The rows fit_run hands the store (RunStore.append), as they were built."""
    rows: list[dict] = []
    append = RunStore.append

    def spy(self, new, e, m):
        rows.extend(dict(r) for r in new)
        return append(self, new, e, m)

    monkeypatch.setattr(RunStore, "append", spy)
    return rows


def test_each_solution_records_where_its_search_began(config, fit_llama, tmp_path, monkeypatch):
    from protoscope.geometry.starts.names import solution_starts

    built = appended_rows(monkeypatch)
    fitted = fit_run(tmp_path / "run", config, loaded=fit_llama)
    assert [r["start"] for r in built] == ["embedding"] * 6  # the default recipe's init
    # the store keeps the column; a run without it (older) reads the same from its manifest
    rows = RunStore.open(tmp_path / "run").solutions()
    assert list(rows["start"]) == ["embedding"] * 6
    assert list(solution_starts(rows, fitted.store.manifest)) == ["embedding"] * 6
    assert list(solution_starts(rows.drop(columns="start", errors="ignore"),
                                fitted.store.manifest)) == ["embedding"] * 6


def test_the_start_values():
    import pandas as pd

    from protoscope.geometry.starts.names import encoder_start, learned, solution_starts, start_of

    assert start_of(-1, "normal") == "normal" and start_of(3, "embedding") == "warm"
    assert start_of(-1, "embedding", "/runs/geometry/encoders/enc") == "encoder:enc"
    assert encoder_start("encoder") == "encoder:shipped"
    assert encoder_start("encoder:/tmp/x/enc.json") == "encoder:enc"
    rows = pd.DataFrame({"init_from": [-1, 7]})
    assert list(solution_starts(rows, {})) == ["unknown", "warm"]  # no config: cannot tell
    manifest = {"config": {"start": "encoder:/tmp/enc", "recipe": {"init": "normal"}}}
    assert list(solution_starts(rows, manifest)) == ["encoder:enc"] * 2
    # rows that carry the column keep it; an empty value is read from the manifest
    given = rows.assign(start=["normal", None])
    assert list(solution_starts(given, manifest)) == ["normal", "encoder:enc"]
    assert list(learned(pd.Series(["encoder:enc", "embedding", None]))) == [True, False, False]
