"""A universal m trained over many texts (geometry/starts/universal.py): it beats a random m, its file
is what `fit --m-from FILE` keeps bit for bit, an interrupted training resumes to the same m,
and bad input is one line."""
import random

import pytest
import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.starts.frozen import load_frozen_m
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import Text, tokenize
from protoscope.geometry.starts.universal import (UniversalConfig, checkpoint_path, read_universal_m,
                                           recorded_texts, save_universal_m,
                                           train_universal_m)
from test_reliability import cli, fit_args, ns, one_line  # noqa: F401  (ns: the fixture)


def word_texts(loaded, count: int, seed: int = 0, words: int = 10) -> list[Text]:
    """Texts of words the tiny tokenizer knows whole (random English words are mostly unknown
    to it and would give runs of the unknown token)."""
    vocab = sorted(w for w in loaded.tokenizer.get_vocab() if w.isalpha())
    rng = random.Random(seed)
    out = []
    for i in range(count):
        s = " ".join(rng.choices(vocab, k=words))
        out.append(Text(f"w{i:02d}", "random", None, s, tokenize(loaded, s)))
    return out


def test_training_raises_the_share_of_texts_exact_with_one_m(fit_llama):
    """The loop's own progress. A random m kept frozen in the same loop does about as well on
    this tiny model (universal.py's docstring): that comparison is a measurement, not a test."""
    texts = word_texts(fit_llama, 24)
    decoder = Decoder(fit_llama, "bos e m*")
    config = UniversalConfig(length=4, epochs=30, batch_texts=8, e_steps=8, patience=30)
    trained = train_universal_m(decoder, texts, config)
    history = trained.history
    assert history[0]["share_exact"] <= 0.2 and trained.meta["share_exact"] >= 0.6, history
    assert history[-1]["mean_accuracy"] > history[0]["mean_accuracy"] + 0.3
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    assert history[-1]["steps"] == len(history) * 3 * 8  # 24 texts / 8 a batch x 8 steps
    best = max(history, key=lambda r: (r["share_exact"], r["mean_accuracy"]))
    assert trained.meta["best_epoch"] == best["epoch"] and trained.meta["share_exact"] == best["share_exact"]


def test_resume_after_an_interrupted_epoch_gives_the_same_m(fit_llama, tmp_path):
    texts = word_texts(fit_llama, 6, seed=1)
    decoder = Decoder(fit_llama, "bos e m*")
    config = UniversalConfig(length=4, epochs=4, batch_texts=4, e_steps=3, patience=4)
    whole = train_universal_m(decoder, texts, config)
    ckpt = tmp_path / "m.checkpoint.safetensors"

    def interrupt(step):  # 2 minibatches x 3 steps an epoch: step 15 is inside epoch 3
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_universal_m(decoder, texts, config, checkpoint=ckpt, on_step=interrupt)
    assert ckpt.exists()
    resumed = train_universal_m(decoder, texts, config, checkpoint=ckpt)
    assert torch.equal(resumed.m, whole.m)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.meta["steps"] == whole.meta["steps"] == 4 * 2 * 3
    # the file keeps the trained m bit for bit, and --m-from reads that m
    path = save_universal_m(tmp_path / "m.safetensors", resumed, texts)
    m, meta = read_universal_m(path)
    assert torch.equal(m, whole.m) and torch.equal(load_frozen_m(str(path)), whole.m)
    assert meta["n_texts"] == 6 and [t.text_id for t in recorded_texts(meta)] == [t.text_id for t in texts]
    # a checkpoint of another training is refused, not resumed
    with pytest.raises(Exception, match="checkpoint of another universal m training"):
        train_universal_m(decoder, texts, UniversalConfig(**{**config.__dict__, "seed": 1}), checkpoint=ckpt)


def universal_args(ns, out, **options) -> list[str]:  # noqa: F811
    values = {"model": ns.model, "texts": ns.texts, "length": 4, "epochs": 2, "batch_texts": 2,
              "e_steps": 2, "out": out, **options}
    argv = ["encoder", "universal-m", "--quiet"]
    for name, value in values.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def test_the_file_round_trips_and_fit_m_from_keeps_m_bit_identical(ns, tmp_path, capfd):  # noqa: F811
    out = tmp_path / "universal.safetensors"
    rc, stdout, err = cli(universal_args(ns, out), capfd)
    assert rc == 0, err
    assert "universal m trained" in stdout and err == ""
    assert not checkpoint_path(out).exists(), "a finished training leaves no checkpoint"
    m, meta = read_universal_m(out)
    assert m.dim() == 1 and m.dtype == torch.float32
    assert torch.equal(load_frozen_m(str(out)), m)
    assert meta["length"] == 4 and meta["n_texts"] == 3 and meta["texts_spec"] == str(ns.texts)
    assert meta["epochs"] == len(meta["history"]) <= 2 and 0 <= meta["share_exact"] <= 1
    assert meta["model"]["weights_sha256"] and meta["arrangement"] == "bos e m*"
    assert [t.text for t in recorded_texts(meta)] == ["the time of the day", "we can see it now",
                                                      "this is a good one for you"]
    assert (tmp_path / "universal.json").exists()

    rc, stdout, err = cli(universal_args(ns, out), capfd)  # the same command: nothing to do
    assert rc == 0 and "already trained" in stdout, err
    assert torch.equal(read_universal_m(out)[0], m)

    run = tmp_path / "run"
    rc, _, err = cli(fit_args(ns, m_from=out, max_steps=20, out=run), capfd)
    assert rc == 0, err
    vectors = RunStore.open(run).vectors()["m"]
    assert len(vectors) and all(torch.equal(row, m) for row in vectors)


BAD = {  # case: (options, words the one line must contain)
    "length 0": ({"length": 0}, ["--length must be at least 1, got 0"]),
    "epochs 0": ({"epochs": 0}, ["--epochs must be at least 1, got 0"]),
    "batch texts 0": ({"batch_texts": 0}, ["--batch-texts must be at least 1, got 0"]),
    "lr-m 0": ({"lr_m": 0}, ["--lr-m must be positive"]),
    "out not safetensors": ({"out": "{tmp}/m.bin"}, ["m.bin", ".safetensors file"]),
    "missing texts": ({"texts": "{tmp}/missing.txt"}, ["missing.txt", "does not exist"]),
    "arrangement without m": ({"arrangement": "e*"}, ["arrangement with m", "'e*'"]),
    "length longer than a text": ({"length": 50}, ["has 5 tokens", "a prefix of 50"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_line(case, ns, tmp_path, capfd):  # noqa: F811
    options, needles = BAD[case]
    options = {k: str(v).format(tmp=tmp_path) for k, v in options.items()}
    out = options.pop("out", tmp_path / "m.safetensors")
    rc, _, err = cli(universal_args(ns, out, **options), capfd)
    one_line(rc, err, *needles)
    assert not list(tmp_path.glob("m.*")), "bad input leaves no file"


def test_an_existing_file_of_other_settings_and_another_model_get_one_line(ns, tmp_path, capfd):  # noqa: F811
    out = tmp_path / "m.safetensors"
    rc, _, err = cli(universal_args(ns, out, model=ns.other_model), capfd)
    assert rc == 0, err
    rc, _, err = cli(universal_args(ns, out, model=ns.other_model, seed=1), capfd)
    one_line(rc, err, str(out), "another model, texts or settings", "--overwrite")
    rc, _, err = cli(fit_args(ns, m_from=out, out=tmp_path / "run"), capfd)
    one_line(rc, err, "universal m was trained on", "other weights")


def test_the_starts_bench_runs_a_universal_m_only_when_its_texts_are_disjoint(fit_llama, tmp_path):
    from safetensors.torch import save_file

    from protoscope.bench.starts import SMOKE, check_universal_m, held_out_texts

    s = {**SMOKE, "texts": 2}
    held_out = held_out_texts(fit_llama, s["texts"])
    config = UniversalConfig(length=s["length"], epochs=1, batch_texts=2, e_steps=1)
    decoder = Decoder(fit_llama, "bos e m*")
    for name, texts in (("apart", word_texts(fit_llama, 2)), ("overlap", word_texts(fit_llama, 2)[:1] + held_out[:1])):
        path = save_universal_m(tmp_path / f"{name}.safetensors", train_universal_m(decoder, texts, config), texts)
        record, why = check_universal_m(str(path), fit_llama, s)
        if name == "apart":
            assert record["ok"] and why is None and record["training_texts"] == 2
        else:
            assert not record["ok"] and record["shared_text"] == [held_out[0].text_id]
            assert "not disjoint" in why
    plain = tmp_path / "plain.safetensors"
    save_file({"m": torch.zeros(fit_llama.info.d_model)}, str(plain))
    record, why = check_universal_m(str(plain), fit_llama, s)
    assert record is None and "records no training texts" in why
    # the fitting loop's own refusal (frozen.py) is the bench's reason: an m of other weights
    from protoscope.geometry.models.loading import tiny_model

    other = tiny_model("llama", seed=1, initializer_range=0.3)
    assert other.info.d_model == fit_llama.info.d_model
    record, why = check_universal_m(str(tmp_path / "apart.safetensors"), other, s)
    assert record is None and "other weights" in why, why


def test_the_command_interrupted_resumes_from_its_checkpoint(ns, tmp_path, capfd, monkeypatch):  # noqa: F811
    from protoscope.geometry.starts import universal

    whole, cut = tmp_path / "whole.safetensors", tmp_path / "cut.safetensors"
    rc, _, err = cli(universal_args(ns, whole, epochs=3, patience=3), capfd)
    assert rc == 0, err
    save = universal._State.save

    def save_then_stop(self, path, signature):  # Ctrl-C right after epoch 1 is checkpointed
        save(self, path, signature)
        raise KeyboardInterrupt

    monkeypatch.setattr(universal._State, "save", save_then_stop)
    rc, _, err = cli(universal_args(ns, cut, epochs=3, patience=3), capfd)
    assert rc == 130 and "run the same command to resume" in err
    assert checkpoint_path(cut).exists() and not cut.exists()
    monkeypatch.setattr(universal._State, "save", save)
    rc, _, err = cli(universal_args(ns, cut, epochs=3, patience=3), capfd)  # the same command
    assert rc == 0, err
    assert not checkpoint_path(cut).exists()
    (m1, meta1), (m2, meta2) = read_universal_m(cut), read_universal_m(whole)
    assert torch.equal(m1, m2)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(meta1["history"]) == strip(meta2["history"])
