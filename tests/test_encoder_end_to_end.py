"""The end-to-end encoder: fine-tuned through the frozen decoder, it reconstructs its training
texts better than its mlp start, leaves the model untouched, round-trips through safetensors +
JSON, and is refused on any other model like every encoder."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protoscope.cli import main
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.starts.encoder import encoder_starts, load_encoder, text_features, zero_step_accuracy
from protoscope.geometry.starts.train import train_encoder
from protoscope.geometry.starts.end_to_end import Options, split_texts
from protoscope.geometry.engine.fitting import Problem
from protoscope.geometry.models.loading import save_tiny_model
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import Text

from tiny_run import ARRANGEMENT, LENGTH, cli_fitted_run, single_thread, tiny_loaded

SEEDS = 2
TEXTS = [  # (text_id, context_id, text): g0 and g1 continue one context, the rest stand alone
    ("g0", "c0", "the old man walked to the city in the morning"),
    ("g1", "c0", "the old woman went to the river in the evening"),
    ("w0", None, "money and power are not what people need most today"),
    ("w1", None, "a small dog ran across the field after the red ball"),
    ("w2", None, "rain fell on the roof all night and into the day"),
    ("w3", None, "she opened the window and looked out at the sea"),
    ("w4", None, "we ate bread and cheese under a tree by the road"),
    ("w5", None, "the teacher wrote a long word on the black board"),
]
OPTIONS = Options(holdout=0.25, epochs=12, patience=4, batch_size=2)  # 7 groups: two held out
SEED = 3  # a split whose held-out loss improves on a random tiny model (seed 0's never does)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of 8 texts x 2 seeds at 6 tokens on the tiny Llama and an encoder trained on it."""
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig, fit_run
    from protoscope.geometry.store.texts import Text, tokenize

    loaded = tiny_loaded()
    texts = [Text(i, "file", c, t, tokenize(loaded, t)) for i, c, t in TEXTS]
    config = RunConfig(model=loaded.info.name, texts="e2e", seeds=SEEDS, lengths=(LENGTH,),
                       arrangement=ARRANGEMENT, recipe=resolve_recipe("default", max_steps=300))
    with single_thread():
        store = fit_run(tmp_path_factory.mktemp("e2e") / "run", config, loaded=loaded, texts=texts).store
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    encoder = train_encoder(store, loaded, "end-to-end", seed=SEED, options=OPTIONS)
    return store, loaded, encoder, before


def _seed0(store, text_ids):
    by_id = {t.text_id: t for t in store.texts()}
    return [Problem(t, 0, by_id[t].prefix(LENGTH)) for t in sorted(text_ids)]


def _loss(loaded, encoder, problems) -> float:
    """Mean per-token loss of decoder(encoder(text)), computed here rather than trusted."""
    e, m = encoder.predict(text_features(loaded, [p.targets for p in problems]), [len(p.targets) for p in problems])
    with torch.no_grad():
        out = Decoder(loaded, ARRANGEMENT)(e, m, torch.tensor([p.targets for p in problems]))
    return float(out.loss.mean())


def test_end_to_end_reconstructs_its_training_texts_better_than_the_mlp(trained):
    store, loaded, encoder, _ = trained
    run = encoder.meta["end_to_end"]
    held = run["held_out_texts"]
    # two groups held out (one context counts once); the mlp start never saw them
    assert len(held) in (2, 3) and ({"g0", "g1"} <= set(held) or not {"g0", "g1"} & set(held))
    assert encoder.meta["trained_on"]["texts"] <= len(TEXTS) - len(held)
    train = _seed0(store, {t.text_id for t in store.texts()} - set(held))
    mlp = train_encoder(store, loaded, "mlp", seed=0)  # trained on every text
    learned, baseline = _loss(loaded, encoder, train), _loss(loaded, mlp, train)
    assert learned < 0.8 * baseline, (learned, baseline)
    assert run["kept"]["train"]["loss"] < 0.8 * run["mlp_start"]["train"]["loss"]
    # the recorded zero-step accuracy is that of the starts `fit --init encoder:ENC` gets
    starts = encoder_starts(encoder, loaded, train)
    e, m = (torch.stack([getattr(p, f"init_{n}") for p in starts]) for n in "em")
    got = zero_step_accuracy(Decoder(loaded, ARRANGEMENT), e, m, train)
    assert encoder.meta["zero_step_accuracy"]["train"] == pytest.approx(float(np.mean(got)))
    assert encoder.meta["zero_step_accuracy"]["held_out"] is not None


def test_the_held_out_slice_is_split_by_text_and_by_context():
    texts = [Text(i, "file", c, t, (1,)) for i, c, t in TEXTS]
    sides = set()
    for seed in range(20):
        train, held = split_texts(texts, 0.25, seed)
        assert sorted(train + held) == sorted(i for i, _, _ in TEXTS) and not set(train) & set(held)
        assert len(held) == (3 if "g0" in held else 2)  # two of 7 groups; c0 is one group
        assert ("g0" in held) == ("g1" in held)
        sides.add("g0" in held)
        assert split_texts(texts, 0.25, seed) == (train, held)  # seeded
    assert sides == {True, False}
    with pytest.raises(ValueError, match="too few"):
        split_texts(texts[:2], 0.25, 0)  # one context: nothing left to train on


@pytest.mark.parametrize("seed", [SEED, 0])
def test_the_kept_epoch_has_the_lowest_held_out_loss(trained, seed):
    store, loaded, encoder, _ = trained
    if seed != SEED:  # on this split the held-out loss never improves: the mlp start is kept
        encoder = train_encoder(store, loaded, "end-to-end", seed=seed, options=OPTIONS)
    run = encoder.meta["end_to_end"]
    held = [h["held_out_loss"] for h in run["history"]]
    assert run["kept_epoch"] == int(np.argmin(held)) and (run["kept_epoch"] > 0) == (seed == SEED)
    assert run["kept"]["held_out"]["loss"] == pytest.approx(min(held))
    # it stopped `patience` epochs after the kept one, or at the last epoch
    assert run["epochs_run"] == min(run["kept_epoch"] + OPTIONS.patience, OPTIONS.epochs)


def test_the_regression_term_pulls_predictions_towards_their_texts_solutions(trained):
    store, loaded, encoder, _ = trained
    pulled = train_encoder(store, loaded, "end-to-end", seed=SEED,
                           options=dataclasses.replace(OPTIONS, regression=5.0))
    assert "nearest-solution cosine" in pulled.meta["end_to_end"]["loss"]
    rows, e_sol, _ = store.solution_vectors()
    train = _seed0(store, {t.text_id for t in store.texts()} - set(encoder.meta["end_to_end"]["held_out_texts"]))

    def nearest_cosine(enc) -> float:
        e, _ = enc.predict(text_features(loaded, [p.targets for p in train]), [len(p.targets) for p in train])
        own = [torch.tensor((rows["text_id"] == p.text_id).to_numpy()) for p in train]
        return float(np.mean([F.cosine_similarity(e[i][None], e_sol[o]).max() for i, o in enumerate(own)]))

    assert nearest_cosine(pulled) > nearest_cosine(encoder) + 0.05


def test_the_model_is_untouched_and_gets_no_gradient(trained):
    _, loaded, _, before = trained
    after = loaded.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in loaded.model.parameters())


def test_a_model_that_is_not_frozen_is_refused(trained):
    store, loaded, _, _ = trained
    weight = next(loaded.model.parameters())
    weight.requires_grad_(True)
    try:
        with pytest.raises(ValueError, match="must be frozen"):
            train_encoder(store, loaded, "end-to-end", options=OPTIONS)
    finally:
        weight.requires_grad_(False)


def test_training_is_seeded_and_deterministic(trained):
    store, loaded, encoder, _ = trained
    again = train_encoder(store, loaded, "end-to-end", seed=SEED, options=OPTIONS)
    assert encoder.tensors.keys() == again.tensors.keys()
    assert all(torch.equal(encoder.tensors[k], again.tensors[k]) for k in encoder.tensors)


def test_save_and_load_predict_identically(trained, tmp_path):
    store, loaded, encoder, _ = trained
    path = encoder.save(tmp_path / "enc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.json", "enc.safetensors", "enc.texts.jsonl.gz"]
    meta = json.loads(path.read_text())
    assert meta["kind"] == "end-to-end" and set(meta["zero_step_accuracy"]) == {"train", "held_out"}
    again = load_encoder(tmp_path / "enc")
    assert again.kind == "end-to-end" and {"w0", "w1", "log_e_norm"} <= again.tensors.keys()
    problems = [Problem(t.text_id, s, t.prefix(LENGTH)) for t in store.texts() for s in range(SEEDS)]
    for a, b in zip(encoder_starts(encoder, loaded, problems), encoder_starts(again, loaded, problems)):
        assert torch.equal(a.init_e, b.init_e) and torch.equal(a.init_m, b.init_m)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """An end-to-end encoder trained through the command line on a run of a saved tiny model."""
    return cli_fitted_run(tmp_path_factory.mktemp("e2e-cli"), ["the cat sat on the mat",
                          "we went to the city at night", "this is a good one for you"])


def test_the_command_line_trains_it_and_fit_starts_from_it(cli_run, tmp_path, capsys):
    root, model, texts = cli_run
    capsys.readouterr()
    assert main(["encoder", "train", str(root / "run"), "--out", str(tmp_path / "enc"),
                 "--kind", "end-to-end", "--epochs", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "zero-step accuracy of decoder(encoder(text)): training texts" in out, out
    assert json.loads((tmp_path / "enc.json").read_text())["end_to_end"]["options"]["epochs"] == 3
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4", "--seeds", "1",
                 "--out", str(tmp_path / "run"), "--max-steps", "150", "--quiet",
                 "--init", f"encoder:{tmp_path / 'enc'}"]) == 0
    assert RunStore.open(tmp_path / "run").manifest["start"]["kind"] == "end-to-end"

    other = save_tiny_model(tmp_path / "other", "llama", seed=0, initializer_range=0.3, hidden_size=32)
    capsys.readouterr()
    code = main(["fit", "--model", str(other), "--texts", str(texts), "--length", "4", "--seeds", "1",
                 "--out", str(tmp_path / "other-run"), "--init", f"encoder:{tmp_path / 'enc'}", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "was trained on" in err[0] and "d_model 32" in err[0], err


@pytest.mark.parametrize("option, says", [(["--holdout", "1"], "--holdout must be in [0, 1)"),
                                          (["--epochs", "0"], "--epochs must be at least 1"),
                                          (["--lr", "-1"], "--lr must be")])
def test_bad_end_to_end_options_are_one_line(cli_run, option, says, tmp_path, capsys):
    root, _, _ = cli_run
    capsys.readouterr()
    code = main(["encoder", "train", str(root / "run"), "--out", str(tmp_path / "enc"),
                 "--kind", "end-to-end", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err


def test_extra_texts_train_it_without_solutions(trained):
    """Texts with no solution join the training (the loss needs none); a text the run holds is
    not added twice, one too short for the run's length is left out, and both are counted."""
    store, loaded, _, _ = trained
    from protoscope.geometry.store.texts import tokenize

    new = ["the boat sailed out of the harbour at dawn", "green hills rolled away to the far blue sky",
           "a letter came for him on a cold grey morning"]
    extra = [Text(f"x{i}", "file", None, t, tokenize(loaded, t)) for i, t in enumerate(new)]
    extra.append(Text("again", "file", None, TEXTS[2][2], tokenize(loaded, TEXTS[2][2])))  # in the run
    extra.append(Text("short", "file", None, "hi", tokenize(loaded, "hi")))
    base = train_encoder(store, loaded, "end-to-end", seed=SEED, options=OPTIONS)
    more = train_encoder(store, loaded, "end-to-end", seed=SEED, options=OPTIONS,
                         extra_texts=extra, extra_spec="three more")
    run, base_run = more.meta["end_to_end"], base.meta["end_to_end"]
    assert run["extra_texts"] == {"spec": "three more", "texts": 3, "sources": ["file"],
                                  "lengths": "each run length",
                                  "skipped_already_in_run": 1, "skipped_too_short": 1}
    held = set(run["held_out_texts"])
    assert run["train_texts"] + len(held) == len(TEXTS) + 3
    assert base_run["train_texts"] + len(base_run["held_out_texts"]) == len(TEXTS)
    assert not torch.equal(more.tensors["w0"], base.tensors["w0"])  # they changed what it learned


def test_extra_texts_are_refused_for_kinds_that_learn_from_solutions(cli_run, tmp_path, capsys):
    root, _, _ = cli_run
    capsys.readouterr()
    code = main(["encoder", "train", str(root / "run"), "--out", str(tmp_path / "enc"),
                 "--kind", "mlp", "--texts", "random:4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--texts trains the end-to-end kind only" in err[0], err


def test_the_command_line_takes_extra_texts(cli_run, tmp_path, capsys):
    root, _, _ = cli_run
    capsys.readouterr()
    assert main(["encoder", "train", str(root / "run"), "--out", str(tmp_path / "enc"),
                 "--kind", "end-to-end", "--epochs", "2", "--holdout", "0", "--quiet",
                 "--texts", "random:5", "--text-seed", "4"]) == 0
    meta = json.loads((tmp_path / "enc.json").read_text())["end_to_end"]
    assert meta["extra_texts"]["spec"] == "random:5" and meta["extra_texts"]["texts"] == 5
    assert meta["train_texts"] == 3 + 5


# ---------------------------------------------------------------- at scale: texts alone, lengths, resume

MORE = ["the boat left the harbour before the sun came up over the hills",
        "my brother plays the piano every evening after his long day at work",
        "a cold wind blew through the empty streets of the little town last night",
        "the children painted the fence green and then ran home for their supper",
        "he found an old map in the attic and spent the whole weekend reading it",
        "the market opens at six and the fish are gone by nine most mornings"]


def _more_texts(loaded):
    from protoscope.geometry.store.texts import tokenize

    return [Text(f"m{i}", "file", None, t, tokenize(loaded, t)) for i, t in enumerate(MORE)]


def test_texts_alone_train_one_encoder_for_several_lengths_from_a_given_start(trained):
    store, loaded, encoder, _ = trained
    options = Options(holdout=0.0, epochs=3, batch_size=2)
    more = train_encoder(None, loaded, "end-to-end", seed=SEED, options=options, base=encoder,
                         extra_texts=_more_texts(loaded), extra_spec="six", lengths=(4, 6))
    run = more.meta["end_to_end"]
    assert more.meta["lengths"] == [4, 6] and run["items"]["train"] == len(MORE)  # one length each
    assert run["extra_texts"]["lengths"] == "one each (seeded round robin)"
    assert "start" in run and "mlp_start" not in run and more.meta["trained_on"] == {"run": None}
    # epoch 0 is the given encoder itself: its length parameters start at zero
    assert torch.count_nonzero(more.tensors["w_len"]) > 0 and torch.count_nonzero(more.tensors["len_norm"]) > 0
    features = text_features(loaded, [loaded.tokenizer.encode(MORE[0])[:4]] * 2)
    e4, _ = more.predict(features, [4, 4])
    e6, _ = more.predict(features, [6, 6])
    assert not torch.allclose(e4, e6)  # the same features, another length: another start
    with pytest.raises(Exception, match="length-conditioned"):
        more.predict(features)
    base_e, _ = encoder.predict(features, [4, 4])
    from protoscope.geometry.starts.network import length_conditioned, predict
    zero = length_conditioned(encoder.tensors)
    assert torch.allclose(predict(zero, features, int(loaded.info.d_model), [4, 4])[0], base_e)


def test_a_stopped_training_resumes_to_the_same_encoder(trained, tmp_path):
    store, loaded, _, _ = trained
    full = train_encoder(store, loaded, "end-to-end", seed=SEED, options=dataclasses.replace(OPTIONS, epochs=4, patience=9))
    ckpt = tmp_path / "enc.ckpt.pt"
    train_encoder(store, loaded, "end-to-end", seed=SEED, options=dataclasses.replace(OPTIONS, epochs=2, patience=9),
                  checkpoint=ckpt)  # "stopped" after epoch 2
    assert ckpt.exists()
    with pytest.raises(Exception, match="--resume continues it"):
        train_encoder(store, loaded, "end-to-end", seed=SEED, options=OPTIONS, checkpoint=ckpt)
    with pytest.raises(Exception, match="cannot be resumed"):
        train_encoder(store, loaded, "end-to-end", seed=SEED + 1, options=OPTIONS, checkpoint=ckpt, resume=True)
    resumed = train_encoder(store, loaded, "end-to-end", seed=SEED,
                            options=dataclasses.replace(OPTIONS, epochs=4, patience=9),
                            checkpoint=ckpt, resume=True)
    history = resumed.meta["end_to_end"]["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]
    for k in full.tensors:
        assert torch.allclose(full.tensors[k], resumed.tensors[k], atol=1e-6), k
    assert [round(h["held_out_loss"], 5) for h in history] == \
        [round(h["held_out_loss"], 5) for h in full.meta["end_to_end"]["history"]]


def test_the_command_line_trains_on_texts_alone_and_draws_the_curve(trained, cli_run, tmp_path, capsys):
    root, model, texts = cli_run
    assert main(["encoder", "train", str(root / "run"), "--out", str(tmp_path / "enc"),
                 "--kind", "end-to-end", "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["encoder", "train", "--out", str(tmp_path / "big"), "--kind", "end-to-end",
                 "--from", str(tmp_path / "enc"), "--texts", "random:6", "--lengths", "3,4",
                 "--epochs", "2", "--holdout", "0.3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "from the texts random:6" in out, out
    meta = json.loads((tmp_path / "big.json").read_text())
    assert meta["lengths"] == [3, 4] and len(meta["end_to_end"]["history"]) == 3
    assert not (tmp_path / "big.ckpt.pt").exists()  # finished: the JSON holds the history
    page = (tmp_path / "big.html").read_text()
    assert "Training curve" in page and "held-out zero-step token accuracy" in page
    # a fit at another length starts from it
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "3", "--seeds", "2",
                 "--out", str(tmp_path / "run3"), "--max-steps", "30", "--quiet",
                 "--init", f"encoder:{tmp_path / 'big'}", "--init-spread", "0.3"]) == 0
    assert RunStore.open(tmp_path / "run3").manifest["start"]["spread"] == 0.3


@pytest.mark.parametrize("argv, says", [
    (["encoder", "train", "--out", "x", "--kind", "end-to-end", "--texts", "random:3"], "needs RUN"),
    (["encoder", "train", "--out", "x", "--kind", "end-to-end", "--from", "shipped"], "--texts names"),
    (["encoder", "train", "RUN", "--out", "x", "--kind", "mlp", "--lengths", "4"], "end-to-end kind only"),
    (["encoder", "train", "RUN", "--out", "x", "--kind", "end-to-end", "--lengths", "4,a"], "comma-separated"),
    (["fit", "--texts", "random:2", "--length", "4", "--out", "x", "--init-spread", "0.1"], "applies to encoder starts"),
    (["fit", "--texts", "random:2", "--length", "4", "--out", "x", "--init", "encoder", "--init-spread", "-1"], ">= 0"),
])
def test_bad_scale_options_are_one_line(argv, says, capsys):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_the_spread_sets_how_far_seeds_start_from_the_prediction(trained):
    store, loaded, encoder, _ = trained
    by_id = {t.text_id: t for t in store.texts()}
    problems = [Problem("w0", s, by_id["w0"].prefix(LENGTH)) for s in (0, 1, 2)]
    for spread in (0.0, 0.05, 0.3):
        starts = encoder_starts(encoder, loaded, problems, spread)
        base = starts[0].init_e
        for p in starts[1:]:
            assert float((p.init_e - base).norm() / base.norm()) == pytest.approx(spread, abs=1e-5)


def test_an_encoder_trained_on_texts_saves_them_for_disjointness_checks(trained, tmp_path):
    from protoscope.geometry.starts.encoder import training_texts

    store, loaded, encoder, _ = trained
    more = train_encoder(None, loaded, "end-to-end", seed=SEED, options=Options(holdout=0.0, epochs=1),
                         base=encoder, extra_texts=_more_texts(loaded), lengths=(4, 6),
                         extra_about={"text_seed": 7})
    more.save(tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    texts = training_texts(again)
    assert again.meta["end_to_end"]["extra_texts"]["text_seed"] == 7
    assert sorted(t.text_id for t in texts) == [f"m{i}" for i in range(len(MORE))]
    assert all(len(t.token_ids) in (4, 6) for t in texts)  # as trained: the prefix, not the whole text


def test_a_start_made_for_the_solver_is_judged_after_the_solver_steps(trained):
    """--unroll K: the loss is taken where K steps of the fit's own Adam move the prediction,
    the kept epoch is picked by that held-out loss, and the encoder still trains (first order)."""
    store, loaded, encoder, _ = trained
    options = dataclasses.replace(OPTIONS, unroll=3, epochs=2)
    made = train_encoder(store, loaded, "end-to-end", seed=SEED, options=options)
    run = made.meta["end_to_end"]
    assert "after 3 steps of the default fit recipe's Adam" in run["loss"]
    first = run["history"][0]
    assert first["held_out_unrolled_loss"] < first["held_out_loss"] - 0.05  # the steps help from epoch 0
    assert "unrolled_accuracy" in run["kept"]["held_out"]
    last = train_encoder(store, loaded, "end-to-end", seed=SEED,
                         options=dataclasses.replace(options, holdout=0.0))
    start = train_encoder(store, loaded, "end-to-end", seed=SEED,
                          options=dataclasses.replace(options, holdout=0.0, epochs=1, lr=1e-12))
    assert not torch.allclose(last.tensors["w1"], start.tensors["w1"])  # a gradient reached it
    with pytest.raises(Exception, match="--unroll"):
        Options(unroll=-1)
