"""The end-to-end encoder: fine-tuned through the frozen decoder, it reconstructs its training
texts better than its mlp start, leaves the model untouched, round-trips through safetensors +
JSON, and is refused on any other model like every encoder."""
import json

import numpy as np
import pytest
import torch

from protoscope.cli import main
from protoscope.geometry.decoder import Decoder
from protoscope.geometry.encoder import (encoder_starts, load_encoder, text_features, train_encoder,
                                         zero_step_accuracy)
from protoscope.geometry.end_to_end import Options
from protoscope.geometry.fitting import Problem
from protoscope.geometry.models import save_tiny_model
from protoscope.geometry.store import RunStore

from tiny_run import ARRANGEMENT, LENGTH, SEEDS, tiny_run

OPTIONS = Options(holdout=0.34, epochs=12, patience=4, batch_size=1)  # 3 texts: one held out


@pytest.fixture(scope="module")
def trained():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    encoder = train_encoder(store, loaded, "end-to-end", seed=0, options=OPTIONS)
    return store, loaded, encoder, before


def _seed0(store, text_ids):
    by_id = {t.text_id: t for t in store.texts()}
    return [Problem(t, 0, by_id[t].prefix(LENGTH)) for t in sorted(text_ids)]


def _loss(loaded, encoder, problems) -> float:
    """Mean per-token loss of decoder(encoder(text)), computed here rather than trusted."""
    e, m = encoder.predict(text_features(loaded, [p.targets for p in problems]))
    with torch.no_grad():
        out = Decoder(loaded, ARRANGEMENT)(e, m, torch.tensor([p.targets for p in problems]))
    return float(out.loss.mean())


def test_end_to_end_reconstructs_its_training_texts_better_than_the_mlp(trained):
    store, loaded, encoder, _ = trained
    run = encoder.meta["end_to_end"]
    held = run["held_out_texts"]
    assert len(held) == 1 and encoder.meta["trained_on"]["texts"] == 2  # the mlp start never saw it
    train = _seed0(store, {t.text_id for t in store.texts()} - set(held))
    mlp = train_encoder(store, loaded, "mlp", seed=0)  # trained on all three texts
    learned, baseline = _loss(loaded, encoder, train), _loss(loaded, mlp, train)
    assert learned < 0.9 * baseline, (learned, baseline)
    assert run["kept"]["train"]["loss"] < 0.9 * run["mlp_start"]["train"]["loss"]
    assert 1 <= run["kept_epoch"] <= run["epochs_run"] <= OPTIONS.epochs
    # the recorded zero-step accuracy is that of the starts `fit --init encoder:ENC` gets
    starts = encoder_starts(encoder, loaded, train)
    e, m = (torch.stack([getattr(p, f"init_{n}") for p in starts]) for n in "em")
    got = zero_step_accuracy(Decoder(loaded, ARRANGEMENT), e, m, train)
    assert encoder.meta["zero_step_accuracy"]["train"] == pytest.approx(float(np.mean(got)))
    assert encoder.meta["zero_step_accuracy"]["held_out"] is not None


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
    again = train_encoder(store, loaded, "end-to-end", seed=0, options=OPTIONS)
    assert encoder.tensors.keys() == again.tensors.keys()
    assert all(torch.equal(encoder.tensors[k], again.tensors[k]) for k in encoder.tensors)


def test_save_and_load_predict_identically(trained, tmp_path):
    store, loaded, encoder, _ = trained
    path = encoder.save(tmp_path / "enc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.json", "enc.safetensors"]
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
    root = tmp_path_factory.mktemp("e2e-cli")
    model = save_tiny_model(root / "model", "llama", seed=0, initializer_range=0.3)
    texts = root / "t.txt"
    texts.write_text("the cat sat on the mat\n\nwe went to the city at night\n\nthis is a good one for you\n")
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4", "--seeds", "2",
                 "--out", str(root / "run"), "--max-steps", "150", "--quiet"]) == 0
    return root, model, texts


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
