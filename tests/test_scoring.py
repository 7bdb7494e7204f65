"""Is H_LM computed once, when first needed: after the first optimiser step, by the end of every
finished fit (with the values the eager path gave), by the next fit or analysis after an
interruption, and by every reader that has a model?"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from protoscope.analysis import information, probes
from protoscope.analysis.run import run_analyses
from protoscope.geometry.store import scoring
from protoscope.geometry.runs.capacity import capacity_search
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.runs.fit import RunConfig, fit_run, prepare_run
from protoscope.geometry.store.scoring import ensure_scored
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import load_texts
from tiny_run import single_thread, tiny_run

TEXTS = "the cat sat on the mat\n\nwe went to the city at night\n\nthis is a good one for you\n"



@pytest.fixture
def spy(monkeypatch):
    """Records "score" for every scoring call, in order with whatever else the test records."""
    events: list[str] = []
    real = scoring.token_nll

    def token_nll(*args, **kwargs):
        events.append("score")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "token_nll", token_nll)
    return events


class _Stop(Exception):
    pass


def _unscored_copy(tmp_path):
    """The shared tiny run, copied, with its texts' NLL removed (a fit killed before scoring)."""
    path, loaded = tiny_run()
    shutil.copytree(path, tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    scored = store.texts()
    store.write_texts([dataclasses.replace(t, token_nll=None) for t in scored])
    return store, loaded, scored


@pytest.fixture
def unscored(tmp_path):
    return _unscored_copy(tmp_path)  # before the spy: building the tiny run scores it


def test_the_first_step_comes_before_any_scoring(config, fit_llama, tmp_path, spy):
    fit_run(tmp_path / "run", config, loaded=fit_llama, on_step=lambda acc: spy.append("step"))
    assert spy[0] == "step" and "score" in spy
    assert spy.index("score") > len(spy) - 1 - spy[::-1].index("step")  # after the last step too


def test_a_fit_stopped_at_its_first_step_stored_no_scores(config, fit_llama, tmp_path, spy):
    def stop(acc):
        raise _Stop

    with pytest.raises(_Stop):
        fit_run(tmp_path / "run", config, loaded=fit_llama, on_step=stop)
    assert spy == []
    assert all(t.token_nll is None for t in RunStore.open(tmp_path / "run").texts())


def test_a_finished_fit_is_scored_as_the_eager_path_scored_it(config, fit_llama, tmp_path):
    fitted = fit_run(tmp_path / "run", config, loaded=fit_llama)
    stored = [json.loads(line) for line in (tmp_path / "run" / "texts.jsonl").open()]
    eager = load_texts(config.texts, fit_llama, score_tokens=max(config.lengths))
    assert [t.to_json().keys() for t in eager] == [s.keys() for s in stored]
    for s, e, t in zip(stored, eager, fitted.texts):
        assert {k: v for k, v in s.items() if k != "token_nll"} == \
            {k: v for k, v in e.to_json().items() if k != "token_nll"}
        np.testing.assert_allclose(s["token_nll"], e.token_nll, rtol=1e-5, atol=1e-5)
        assert tuple(s["token_nll"]) == t.token_nll
    assert fitted.store.manifest["status"] == "complete"


def test_an_interrupted_fit_is_scored_when_resumed(config, fit_llama, tmp_path, spy):
    out = tmp_path / "run"

    def stop(group):
        raise _Stop

    with pytest.raises(_Stop):
        fit_run(out, config, loaded=fit_llama, on_group=stop)
    assert spy == [] and all(t.token_nll is None for t in RunStore.open(out).texts())
    fit_run(out, config, loaded=fit_llama)
    assert spy and all(len(t.token_nll) == 3 for t in RunStore.open(out).texts())


def test_scoring_interrupted_midway_keeps_what_it_scored(config, fit_llama, tmp_path, monkeypatch):
    store, _, _ = prepare_run(tmp_path / "run", config, loaded=fit_llama)
    real, scored = scoring.token_nll, []

    def once(loaded, seqs, **kwargs):
        if scored:
            raise _Stop
        scored.extend(seqs)
        return real(loaded, seqs, **kwargs)

    monkeypatch.setattr(scoring, "token_nll", once)
    with pytest.raises(_Stop):
        ensure_scored(store, fit_llama, chunk=1)
    assert [t.token_nll is not None for t in store.texts()] == [True, False, False]
    monkeypatch.setattr(scoring, "token_nll", real)
    progress = []
    texts = ensure_scored(store, fit_llama, progress=lambda *a: progress.append(a), chunk=1)
    assert progress[-1] == ("scored", 2, 2)  # only the two left were scored
    assert all(len(t.token_nll) == 3 for t in texts) and store.texts() == texts


def test_information_scores_an_unscored_run(unscored, spy):
    store, loaded, scored = unscored
    with single_thread():
        table = information.analyze(store, loaded, repeats=1)["information"]
    assert spy == ["score"]
    assert store.texts() == scored  # scored as the finished fit scored them, and stored
    by_id = {t.text_id: t for t in scored}
    expected = [by_id[t].h_lm(int(n)) for t, n in zip(table["text_id"], table["length"])]
    np.testing.assert_allclose(table["h_lm_nats"], expected, rtol=1e-9)


def test_probes_score_an_unscored_run_when_given_a_model(unscored, spy):
    store, loaded, scored = unscored
    probes.analyze(store, None, semantic=False, permutations=1, resamples=10)
    assert spy == [] and all(t.token_nll is None for t in store.texts())  # no model: no scores
    with single_thread():
        probes.analyze(store, loaded, semantic=False, permutations=1, resamples=10)
    assert spy == ["score"] and store.texts() == scored


def test_capacity_search_scores_before_its_table(tmp_path, spy):
    from tiny_run import tiny_loaded

    path = tmp_path / "texts.txt"
    path.write_text(TEXTS)
    config = RunConfig(texts=str(path), seeds=1, lengths=(2, 3), kind="capacity",
                       recipe=resolve_recipe("default", max_steps=5))
    with single_thread():
        store, loaded, texts = prepare_run(tmp_path / "run", config, loaded=tiny_loaded())
        assert all(t.token_nll is None for t in texts)
        table = capacity_search(store, loaded, texts, config)
    assert spy == ["score"] and table["h_lm_nats"].notna().all()
    assert all(len(t.token_nll) == 3 for t in store.texts())


def test_analyze_scores_an_unscored_run_whatever_it_runs(unscored, spy):
    store, loaded, scored = unscored
    with single_thread():
        run_analyses(store, only=["uniqueness"], loaded=loaded, quiet=True)
    assert spy == ["score"] and store.texts() == scored
