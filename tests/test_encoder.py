"""An encoder into proto-token space: it learns its run's starts, saves without pickle, and is
refused on any other model."""
import json

import pytest
import torch
import torch.nn.functional as F

from protoscope.cli import main
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.starts.encoder import (
    encoder_starts, load_encoder, recipe_starts, zero_step_accuracy)
from protoscope.geometry.starts.train import train_encoder
from protoscope.geometry.engine.fitting import Problem
from protoscope.geometry.models.loading import save_tiny_model
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.runs.fit import RunConfig, fit_run
from protoscope.geometry.store.runstore import RunStore

from tiny_run import ARRANGEMENT, LENGTH, SEEDS, cli_fitted_run, tiny_run


@pytest.fixture(scope="module")
def run():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    problems = [Problem(t.text_id, s, t.prefix(LENGTH)) for t in store.texts() for s in range(SEEDS)]
    return store, loaded, problems


def _starts(problems):
    return torch.stack([p.init_e for p in problems]), torch.stack([p.init_m for p in problems])


def test_nearest_encoder_reconstructs_its_training_texts_and_round_trips(run, tmp_path):
    store, loaded, problems = run
    encoder = train_encoder(store, loaded, "nearest")
    encoder.save(tmp_path / "enc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.json", "enc.safetensors"]
    again = load_encoder(tmp_path / "enc.json")
    assert again.kind == "nearest" and again.model == encoder.model
    decoder = Decoder(loaded, ARRANGEMENT)
    seed0 = [p for p in problems if p.seed == 0]
    e, m = _starts(encoder_starts(again, loaded, seed0))
    e1, m1 = _starts(encoder_starts(encoder, loaded, seed0))
    assert torch.equal(e, e1) and torch.equal(m, m1)  # saved and loaded predict the same
    learned = zero_step_accuracy(decoder, e, m, seed0)
    random = zero_step_accuracy(decoder, *recipe_starts(seed0, resolve_recipe("default"), loaded.info), seed0)
    assert learned.min() >= 0.99 and random.max() < 0.5  # the text's own solution, exact as stored


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_regression_starts_are_nearer_their_texts_solutions_than_random(run, kind):
    store, loaded, problems = run
    encoder = train_encoder(store, loaded, kind)
    rows, e_sol, _ = store.solution_vectors()
    seed0 = [p for p in problems if p.seed == 0]
    e, m = _starts(encoder_starts(encoder, loaded, seed0))
    # every prediction has the median norm of the training vectors
    assert torch.allclose(e.norm(dim=1), torch.tensor(encoder.meta["e_norm"]), rtol=1e-4)
    assert torch.allclose(m.norm(dim=1), torch.tensor(encoder.meta["m_norm"]), rtol=1e-4)
    e_rand, _ = recipe_starts(seed0, resolve_recipe("default"), loaded.info)
    for i, p in enumerate(seed0):
        own = torch.tensor((rows["text_id"] == p.text_id).to_numpy())
        learned = F.cosine_similarity(e[i][None], e_sol[own]).mean()
        random = F.cosine_similarity(e_rand[i][None], e_sol[own]).mean()
        assert learned > 0.3 and learned > random + 0.25, (p.text_id, float(learned), float(random))


def test_seeds_above_zero_are_small_seeded_perturbations(run):
    store, loaded, problems = run
    encoder = train_encoder(store, loaded, "ridge")
    starts = encoder_starts(encoder, loaded, problems)
    again = encoder_starts(encoder, loaded, problems)
    by = {(p.text_id, p.seed): p for p in starts}
    for p in starts:
        assert torch.equal(p.init_e, again[starts.index(p)].init_e)  # deterministic
        if p.seed:
            base = by[(p.text_id, 0)].init_e
            rel = float((p.init_e - base).norm() / base.norm())
            assert 0.01 < rel < 0.1


def test_fit_with_an_encoder_start_records_it_and_starts_there(run, tmp_path):
    store, loaded, problems = run
    train_encoder(store, loaded, "nearest").save(tmp_path / "enc")
    config = RunConfig(model=loaded.info.name, texts="tiny-run", seeds=SEEDS, lengths=(LENGTH,),
                       arrangement=ARRANGEMENT, recipe=resolve_recipe("default", max_steps=300),
                       start=f"encoder:{tmp_path / 'enc'}")
    fitted = fit_run(tmp_path / "run", config, loaded=loaded, texts=store.texts())
    rows = fitted.store.solutions()
    assert fitted.store.manifest["start"]["kind"] == "nearest"
    assert rows["converged"].all()
    # seed 0 starts on its text's own stored solution: exact after the first evaluation
    assert (rows[rows["seed"] == 0]["steps"] == 1).all()
    assert rows["steps"].median() < store.solutions()["steps"].median()


@pytest.fixture(scope="module")
def cli_encoder(tmp_path_factory):
    """An encoder trained through the command line on a run of a saved tiny model."""
    root, model, texts = cli_fitted_run(tmp_path_factory.mktemp("encoder-cli"),
                                        ["the cat sat on the mat", "we went to the city at night"])
    assert main(["encoder", "train", str(root / "run"), "--out", str(root / "enc"), "--kind", "ridge"]) == 0
    return root, model, texts


@pytest.mark.parametrize("overrides", [{"hidden_size": 32}, {"vocab_size": 700}],
                         ids=["other-d_model", "other-vocabulary"])
def test_an_encoder_on_another_model_is_one_line_and_exit_2(cli_encoder, overrides, tmp_path, capsys):
    root, _, texts = cli_encoder
    other = save_tiny_model(tmp_path / "other", "llama", seed=0, initializer_range=0.3, **overrides)
    capsys.readouterr()
    code = main(["fit", "--model", str(other), "--texts", str(texts), "--length", "4", "--seeds", "1",
                 "--out", str(tmp_path / "run"), "--init", f"encoder:{root / 'enc'}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "was trained on" in err[0] and ("d_model 32" in err[0] or "vocabulary 700" in err[0])


def test_the_same_model_fits_from_the_encoder(cli_encoder, tmp_path, capsys):
    root, model, texts = cli_encoder
    meta = json.loads((root / "enc.json").read_text())
    assert meta["kind"] == "ridge" and meta["model"]["d_model"] == 64
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4", "--seeds", "1",
                 "--out", str(tmp_path / "run"), "--max-steps", "150", "--init",
                 f"encoder:{root / 'enc'}", "--quiet"]) == 0
    store = RunStore.open(tmp_path / "run")
    assert store.manifest["config"]["start"] == f"encoder:{root / 'enc'}"
    assert store.manifest["config"]["recipe"]["init"] == "embedding"  # restarts: the recipe's init


@pytest.mark.parametrize("spec, says", [("encoder:/nonexistent/enc", "does not exist"),
                                        ("encoder:", "expected normal")])
def test_a_bad_encoder_spec_is_one_line(cli_encoder, spec, says, tmp_path, capsys):
    root, model, texts = cli_encoder
    capsys.readouterr()
    code = main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4",
                 "--out", str(tmp_path / "run"), "--init", spec, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err


def test_no_encoder_ships_for_a_tiny_model_is_one_line(cli_encoder, tmp_path, capsys):
    root, model, texts = cli_encoder
    capsys.readouterr()
    code = main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4",
                 "--out", str(tmp_path / "run"), "--init", "encoder", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no encoder ships" in err[0], err


def test_the_starts_bench_smoke_mode_runs(capsys):
    from protoscope.bench import starts

    starts.main(["--smoke"])
    out = capsys.readouterr().out
    for name in ("paper", "default", "curriculum", "frozen_m", "encoder_nearest", "encoder_ridge",
                 "encoder_mlp", "encoder_end-to-end", "encoder_mlp@0", "encoder_end-to-end@0.3"):
        assert f"\n{name} " in out, out  # @S: the encoder at seed spread S
    assert "universal m's 3 training texts: disjoint True" in out  # the smoke run trains one
    assert "disjoint True" in out and "ratio paper/best" in out
    assert "encoder end-to-end: trained in" in out and "zero-step accuracy held_out" in out


def test_the_shipped_encoder_is_the_default_models_and_intact():
    """`fit --init encoder` on a fresh install: the package's encoder loads (its tensors match
    the sha256 its JSON records), is for the default model, and names no machine path."""
    from protoscope.geometry.starts.encoder import KINDS, SHIPPED, load_encoder
    from protoscope.geometry.models.loading import DEFAULT_MODEL

    shipped = sorted(SHIPPED.glob("*.json"))
    assert shipped, "no encoder ships in the package"
    for meta_path in shipped:
        encoder = load_encoder(meta_path)
        assert encoder.kind in KINDS and encoder.meta["model"]["name"] == DEFAULT_MODEL
        assert encoder.meta["model"]["d_model"] == 576
        assert "/" not in str(encoder.meta["trained_on"]["run"])


def test_the_starts_bench_keeps_what_it_finished_and_adds_rows(tmp_path, monkeypatch, capsys):
    """A configuration an interrupted invocation finished, or (with --add) one already in the
    result file of the same settings, is not fitted again; a result file of other settings
    is one line and exit 2."""
    from protoscope.bench import common, starts

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    settings = {**starts.SETTINGS, "length": 32}
    (tmp_path / "s.json").write_text(json.dumps(
        {"command": "earlier", "settings": settings, "configs": {"paper": {"label": "paper"}}}))
    (tmp_path / "s.partial.json").write_text(json.dumps(
        {"settings": settings, "configs": {"default": {"label": "default", "measured_by": "cut"}}}))
    kept = starts.kept_configs("s", settings, add=True)
    assert kept == {"paper": {"label": "paper", "measured_by": "earlier"},
                    "default": {"label": "default", "measured_by": "cut"}}
    assert set(starts.kept_configs("s", settings, add=False)) == {"default"}  # the partial only
    assert starts.kept_configs("s", {**settings, "cap": 5}, add=False) == {}  # other settings: none
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        starts.kept_configs("s", {**settings, "cap": 5}, add=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "was measured with" in err[0], err


def test_the_starts_bench_fits_only_what_is_not_kept(monkeypatch):
    from protoscope.bench import starts

    calls = []
    monkeypatch.setattr(starts, "job", lambda **kw: calls.append(kw["label"]) or {"label": kw["label"]})
    seen = []
    out = starts.compare(starts.SMOKE, {"mlp": "x"}, loaded=object(), only=["paper", "curriculum",
                         "encoder_mlp"], keep={"paper": {"label": "paper", "kept": True}},
                         on_result=lambda r: seen.append(r["label"]))
    assert calls == ["curriculum", "encoder_mlp"] and seen == calls
    assert set(out["configs"]) == {"paper", "curriculum", "encoder_mlp"}
    assert out["configs"]["paper"]["kept"] and "frozen_m" not in out["skipped"]


def test_added_rows_keep_what_the_earlier_file_said(tmp_path):
    from protoscope.bench import starts

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"command": "first", "seconds": 5, "trained": {"mlp": {"seconds": 1}},
                                "disjoint": {"ok": True}, "skipped": {"frozen_m": "no m given"},
                                "configs": {"encoder_mlp": {}}}))
    now = {"settings": {}, "trained": {"ridge": {"seconds": 2}}, "skipped": {},
           "configs": {"encoder_mlp": {}, "frozen_m": {}}}
    out = starts.with_earlier(now, path)
    assert out["trained"] == {"mlp": {"seconds": 1}, "ridge": {"seconds": 2}}
    assert out["disjoint"] == {"ok": True} and out["skipped"] == {}  # frozen_m ran now
    assert out["earlier"] == [{"command": "first", "seconds": 5}]
    assert starts.with_earlier(now, tmp_path / "none.json") is now


def test_seed_spread_is_the_median_distance_between_one_texts_solutions():
    """Only converged solutions of the same text pair up; e and m each."""
    from types import SimpleNamespace as NS

    from protoscope.bench.starts import seed_spread
    from protoscope.geometry.engine.fitting import FittedGroup

    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    m = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])

    def sol(text, row, converged=True):
        return NS(problem=NS(text_id=text), e_row=row, m_row=row, converged=converged)

    groups = [FittedGroup("a", [sol("t", 0), sol("t", 1)], e, m),
              FittedGroup("b", [sol("u", 2), sol("u", 3, converged=False)], e, m)]
    out = seed_spread(groups)
    assert out["pairs"] == 1 and out["median_cosine_distance_e"] == pytest.approx(1.0)
    assert out["median_cosine_distance_m"] == pytest.approx(0.0)
    assert seed_spread([])["median_cosine_distance_e"] is None


def test_the_starts_bench_fits_encoder_rows_with_the_solver_it_is_given(monkeypatch):
    """--solver KEY=VALUE: recipe overrides reach the encoder rows (and their spreads) only,
    and name them; the recipes' own rows keep their recipe."""
    from protoscope.bench import starts

    calls = {}
    monkeypatch.setattr(starts, "job", lambda **kw: calls.update({kw["label"]: kw.get("overrides")})
                        or {"label": kw["label"]})
    solver = starts.parse_solver(["lr=0.02", "max_restarts=0"])
    assert solver == {"lr": 0.02, "max_restarts": 0}
    starts.compare(starts.SMOKE, {"mlp": "x"}, loaded=object(), spreads=(0.5,), solver=solver)
    assert calls["encoder_mlp/lr=0.02,max_restarts=0"] == solver
    assert calls["encoder_mlp@0.5/lr=0.02,max_restarts=0"] == solver
    assert calls["default"] == {} and "encoder_mlp" not in calls


@pytest.mark.parametrize("bad", [["lr"], ["bogus=1"]])
def test_the_starts_bench_refuses_a_bad_solver_in_one_line(bad, capsys):
    from protoscope.bench import starts

    with pytest.raises(SystemExit) as stop:
        starts.main(["--solver", *bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "--solver" in err[0], err


@pytest.mark.integration
def test_the_held_out_texts_reach_64_tokens_and_keep_their_earlier_prefixes():
    """The 64-token row needs held-out texts of 64 tokens; the sentences added for it must not
    change the 16- and 32-token problems earlier rows were measured on."""
    from protoscope.bench import common, starts

    texts = starts.held_out_texts(common.model(), starts.TEXTS)
    assert min(len(t.token_ids) for t in texts) >= 64
    first = {t.text_id: t.token_ids[:32] for t in texts}
    assert first["heldout-prose-0"] == tuple(common.model().tokenizer(
        starts.PROSE[0].split(". In winter")[0] + ".", add_special_tokens=False)["input_ids"])[:32]


def _config(label, median, steps, spread=None, cos=None, converged=None):
    rows = [{"steps": s, "steps_counted": s, "converged": ok}
            for s, ok in zip(steps, converged or [True] * len(steps))]
    return {"label": label, "median_steps": median, "success_rate": 1.0, "rows": rows,
            "zero_step_accuracy": 0.05, "seconds": 10.0, "encoder_seconds": 0.2,
            **({"spread": spread} if spread is not None else {}),
            "seed_spread": {"median_cosine_distance_e": cos}}


def test_the_spread_curve_draws_steps_and_seed_distance_per_encoder():
    from protoscope.reports.figures import no_data_reason
    from protoscope.reports.figures_encoder import spread_curve

    configs = {"default": _config("default", 122, [100, 150]),
               "encoder_a@0": _config("encoder_a@0", 70, [60, 80], spread=0.0, cos=0.0),
               "encoder_a@0.5": _config("encoder_a@0.5", 75, [70, 200], spread=0.5, cos=0.3),
               "encoder_a": _config("encoder_a", 72, [72, 72])}  # no spread: not on the curve
    fig = spread_curve(configs, 16)
    steps, distance = fig.data
    assert list(steps.x) == [0.0, 0.5] and list(steps.y) == [70, 75]
    assert list(steps.error_y.array) == [10, 125]  # up to the worst problem
    assert list(distance.y) == [0.0, 0.3] and "16 tokens" in fig.layout.title.text
    assert fig.layout.shapes[0].y0 == 122  # the random starts' median for scale
    assert no_data_reason(spread_curve({"default": configs["default"]}))


def test_the_starts_page_tables_each_length_and_counts_failures_as_the_budget(tmp_path, monkeypatch, capsys):
    from protoscope.bench import common, starts_page

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    failed = _config("paper", 600, [100, 600], converged=[True, False])
    failed["rows"][1]["steps"] = 450  # a failure that stopped early still counts as the budget
    result = {"settings": {"length": 16, "texts": 1, "seeds": 2, "cap": 600},
              "configs": {"paper": failed,
                          "encoder_a@0.5": _config("encoder_a@0.5", 75, [70, 80], spread=0.5, cos=0.3)}}
    frame = starts_page.starts_frame(result)
    assert frame.set_index("start").loc["paper", "worst_steps"] == 600
    assert frame.set_index("start").loc["paper", "success"] == "1/2"
    (tmp_path / "starts_16.json").write_text(json.dumps(result))
    starts_page.main(["--results", "starts_16", "--out", str(tmp_path / "page" / "starts.html")])
    page = (tmp_path / "page" / "starts.html").read_text()
    assert "Seeds vs speed" in page and "encoder_a@0.5" in page
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        starts_page.main(["--results", "missing", "--out", str(tmp_path / "x.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "missing.json" in err[0], err


def test_the_training_curve_of_an_unrolled_encoder_shows_what_it_was_judged_by():
    from protoscope.reports.figures_encoder import training_curve

    history = [{"epoch": e, "train_loss": 9 - e, "held_out_loss": 9.5 - e, "held_out_accuracy": 0.01 * e,
                "held_out_unrolled_loss": 7 - e, "held_out_unrolled_accuracy": 0.1 * e} for e in range(3)]
    meta = {"end_to_end": {"history": history, "kept_epoch": 2, "options": {"unroll": 3}}}
    names = [t.name for t in training_curve(meta).data]
    assert "held-out loss after 3 solver steps" in names and "after 3 solver steps" in names
    meta["end_to_end"]["options"]["unroll"] = 0
    assert not any("solver steps" in t.name for t in training_curve(meta).data)


def test_quick_json_carries_the_32_token_starts_ratio_from_its_own_file(tmp_path, monkeypatch):
    """bench-quick cannot afford the 32-token starts comparison; quick.json carries what
    starts_32.json measured (the paper's median over the best start's of at least its
    success), names the file and commands, and reports the 10x target without asserting it."""
    from protoscope.bench import common, run

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert run.starts_at(32) == {}  # no file: no keys
    paper = {**_config("paper", 600, [600, 600]), "success_rate": 0.5, "measured_by": "p"}
    fast = {**_config("encoder_a", 60, [60, 60]), "measured_by": "a"}
    slow_but_unreliable = {**_config("encoder_b", 30, [30, 1000]), "success_rate": 0.4}
    (tmp_path / "starts_32.json").write_text(json.dumps({"command": "c", "configs": {
        "paper": paper, "encoder_a": fast, "encoder_b": slow_but_unreliable}}))
    (tmp_path / "quick.json").write_text(json.dumps({"steps_ratio_paper_over_best": 4.0,
                                                     "targets": {}, "printed_table": ["x"]}))
    out = run.refresh_starts("quick")
    assert out["steps_ratio_paper_over_best_32"] == 10.0 and out["best_start_32"] == "encoder_a"
    assert out["starts_32_from"]["best_measured_by"] == "a"
    assert out["targets"]["steps_ratio_paper_over_best_32"] == {"goal": ">= 10.0", "met": True}
    assert out["targets"]["steps_ratio_paper_over_best"]["met"] is False
    again = run.refresh_starts("quick")  # idempotent: one line, not one per refresh
    assert sum("starts at 32 tokens" in line for line in again["printed_table"]) == 1
