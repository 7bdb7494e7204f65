"""Text sources: spec parsing, the built-in / random / generated / file sources, token NLL."""

from __future__ import annotations

import dataclasses
import json
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import wordfreq

from protoscope.geometry.store.builtin_texts import PARAGRAPHS
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.store.texts import (
    SOURCES, WINDOW_START, WINDOW_WORDS, Text, builtin_texts, generated_texts, load_texts,
    parse_text_spec, random_texts, read_text_file, token_nll, tokenize, window_texts)


def _without_bos(loaded):
    """The same model seen as one without a BOS token (info may be any frozen record)."""
    info = loaded.info
    if dataclasses.is_dataclass(info):
        info = dataclasses.replace(info, bos_token_id=None)
    else:
        info = types.SimpleNamespace(**{**vars(info), "bos_token_id": None})
    return types.SimpleNamespace(model=loaded.model, tokenizer=loaded.tokenizer, info=info,
                                 device=loaded.device, dtype=loaded.dtype)


def _hand_nll(loaded, ids, bos):
    """-log_softmax of the model's own forward, one text, no padding."""
    inputs = torch.tensor([[bos, *ids]] if bos is not None else [list(ids)])
    with torch.no_grad():
        logits = loaded.model(input_ids=inputs.to(loaded.device)).logits[0].cpu()
        logp = F.log_softmax(logits.double(), dim=-1)
    targets = torch.tensor(ids) if bos is not None else torch.tensor(ids[1:])
    return -logp[torch.arange(len(targets)), targets].numpy()


# ---------------------------------------------------------------- built-in and random


def test_builtin_texts_are_many_distinct_and_long_enough():
    texts = builtin_texts()
    ids = [text_id for text_id, _ in texts]
    assert len(texts) >= 8
    assert len(set(ids)) == len(ids)
    assert all(text_id.startswith("builtin-") for text_id in ids)
    for text_id, text in texts:
        assert 180 <= len(text.split()) <= 260, text_id
        assert text.isascii(), text_id
    assert len({text[:40] for _, text in texts}) == len(texts)


def test_random_texts_are_seeded():
    a = random_texts(3, seed=1, n_words=50)
    assert a == random_texts(3, seed=1, n_words=50)
    assert a != random_texts(3, seed=2, n_words=50)
    assert [i for i, _ in a] == ["random-000", "random-001", "random-002"]
    assert len({t for _, t in a}) == 3


def test_random_texts_use_frequent_words():
    top = set(wordfreq.top_n_list("en", 100_000))
    for _, text in random_texts(4, seed=0, n_words=100):
        words = text.split(" ")
        assert len(words) == 100
        assert all(w in top for w in words)


def test_windows_are_disjoint_spans_past_the_contexts_spread_over_paragraphs():
    windows = window_texts()
    assert len(windows) >= 90 and len({i for i, _ in windows}) == len(windows)
    assert all(len(text.split()) == WINDOW_WORDS for _, text in windows)
    # the first windows come from different paragraphs (round robin)
    firsts = [i.rsplit("-", 1)[0] for i, _ in windows[:len(PARAGRAPHS)]]
    assert len(set(firsts)) == len(PARAGRAPHS)
    for slug, paragraph in PARAGRAPHS:
        words = paragraph.split()
        mine = [t for i, t in windows if i.startswith(f"window-{slug}-")]
        spans = [" ".join(words[s:s + WINDOW_WORDS]) for s in
                 range(WINDOW_START, len(words) - WINDOW_WORDS + 1, WINDOW_WORDS)]
        assert mine == spans  # disjoint, in order, none from the paragraph's opening words


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize("spec, expected", [
    ("builtin", ("builtin", {})),
    ("random:5", ("random", {"count": 5})),
    ("generated:3:4", ("generated", {"contexts": 3, "per_context": 4})),
    ("windows:7", ("windows", {"count": 7})),
])
def test_parse_text_spec_forms(spec, expected):
    assert parse_text_spec(spec) == expected


@pytest.mark.parametrize("spec", [
    "random:0", "random:-2", "random:x", "random", "random:1:2", "generated:2",
    "generated:0:3", "generated:2:0", f"generated:{len(PARAGRAPHS) + 1}:1", "wiki",
    "texts.csv", "", "windows:0", "windows", "windows:100000",
])
def test_parse_text_spec_rejects_bad_forms(spec):
    with pytest.raises(ProtoscopeError) as err:
        parse_text_spec(spec)
    assert "\n" not in str(err.value)


def test_unknown_spec_names_the_allowed_forms():
    with pytest.raises(ProtoscopeError, match="builtin, windows:COUNT, random:COUNT, generated:"):
        parse_text_spec("pg19")


def test_too_many_contexts_names_the_limit():
    with pytest.raises(ProtoscopeError, match=f"at most {len(PARAGRAPHS)} contexts"):
        parse_text_spec(f"generated:{len(PARAGRAPHS) + 1}:2")


# ---------------------------------------------------------------- files


def test_txt_file_splits_on_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first text\nstill the first\n\n  \nsecond text\r\n\r\nthird\n")
    assert read_text_file(path) == [("file-000", None, "first text\nstill the first"),
                                    ("file-001", None, "second text"),
                                    ("file-002", None, "third")]


def test_jsonl_file_keeps_ids_and_contexts(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [{"text": "a cat", "id": "x1", "context_id": "c9"}, {"text": "a dog"}]
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\n\n")
    assert read_text_file(path) == [("x1", "c9", "a cat"), ("file-001", None, "a dog")]


def test_file_texts_load_as_file_source(tmp_path, tiny_llama):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "the time of the day", "id": "a"}\n')
    (text,) = load_texts(str(path), tiny_llama)
    assert (text.text_id, text.source, text.context_id) == ("a", "file", None)
    assert text.token_ids == tokenize(tiny_llama, "the time of the day")
    assert len(text.token_nll) == text.n_tokens


BAD_FILES = {
    "empty.txt": (b"", "empty"),
    "blank.txt": (b"\n  \n\n", "empty"),
    "latin1.txt": ("caf\u00e9 au lait".encode("latin-1"), "not UTF-8"),
    "binary.txt": (b"\x00\x01\x02abc\x00", "binary"),
    "empty.jsonl": (b"", "empty"),
    "notjson.jsonl": (b'{"text": "ok"}\n{text: broken\n', "line 2"),
    "notext.jsonl": (b'{"text": "ok"}\n\n{"id": "b"}\n', "line 3"),
    "nonstring.jsonl": (b'{"text": 12}\n', "line 1"),
    "array.jsonl": (b'["text"]\n', "line 1"),
    "emptytext.jsonl": (b'{"text": "ok"}\n{"text": "   "}\n', "line 2"),
    "badid.jsonl": (b'{"text": "ok", "id": 3}\n', "line 1"),
    "dupes.jsonl": (b'{"text": "a", "id": "x"}\n{"text": "b", "id": "x"}\n', "duplicate"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_give_one_line_naming_the_file(tmp_path, tiny_llama, name):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ProtoscopeError) as err:
        load_texts(str(path), tiny_llama)
    message = str(err.value)
    assert "\n" not in message
    assert name in message and expected in message


def test_missing_file_is_named(tmp_path, tiny_llama):
    path = tmp_path / "nowhere.txt"
    for call in (lambda: load_texts(str(path), tiny_llama), lambda: read_text_file(path)):
        with pytest.raises(ProtoscopeError, match="nowhere.txt"):
            call()


# ---------------------------------------------------------------- generated


def test_generated_texts_are_reproducible_and_varied(tiny_llama):
    a = generated_texts(tiny_llama, count_contexts=2, per_context=3, seed=5, n_tokens=12)
    assert [t.text_id for t in a] == [f"gen-c{c:02d}-k{k:02d}" for c in range(2) for k in range(3)]
    assert [t.context_id for t in a] == ["c00"] * 3 + ["c01"] * 3
    assert all(t.source == "generated" and t.n_tokens == 12 for t in a)
    special = set(tiny_llama.tokenizer.all_special_ids)
    assert not any(special & set(t.token_ids) for t in a)
    assert a == generated_texts(tiny_llama, 2, 3, seed=5, n_tokens=12)
    assert len({t.token_ids for t in a}) == len(a)
    other = generated_texts(tiny_llama, 2, 3, seed=6, n_tokens=12)
    assert [t.token_ids for t in other] != [t.token_ids for t in a]


def test_generated_context_does_not_depend_on_how_many_contexts(tiny_llama):
    small = generated_texts(tiny_llama, 1, 2, seed=0, n_tokens=8)
    large = generated_texts(tiny_llama, 3, 2, seed=0, n_tokens=8)
    assert large[:2] == small


def test_generated_spec_loads_with_nll(tiny_llama):
    texts = load_texts("generated:2:2", tiny_llama, generate_tokens=10)
    assert len(texts) == 4
    assert all(len(t.token_nll) == 10 for t in texts)


# ---------------------------------------------------------------- token NLL and H_LM


def test_tokenize_adds_no_special_tokens(tiny_llama):
    ids = tokenize(tiny_llama, "the day of the year")
    assert len(ids) == 5
    assert not set(ids) & set(tiny_llama.tokenizer.all_special_ids)


def test_token_nll_matches_the_models_own_log_softmax(tiny_llama):
    texts = load_texts("builtin", tiny_llama)
    bos = tiny_llama.info.bos_token_id
    for text in (texts[0], min(texts, key=lambda t: t.n_tokens)):
        scored = len(text.token_nll)
        hand = _hand_nll(tiny_llama, text.token_ids[:scored], bos)
        np.testing.assert_allclose(text.token_nll, hand, rtol=1e-5, atol=1e-4)


def test_token_nll_stops_at_the_models_context(tiny_llama):
    n_ctx = tiny_llama.info.n_ctx
    texts = load_texts("random:2", tiny_llama, random_words=n_ctx + 20)
    assert all(t.n_tokens >= n_ctx for t in texts)
    # BOS takes one position of the context; the rest is scored.
    assert all(len(t.token_nll) == n_ctx - 1 for t in texts)
    short = load_texts("random:1", tiny_llama, random_words=n_ctx // 2)[0]
    assert len(short.token_nll) == short.n_tokens


def test_token_nll_batching_does_not_change_values(tiny_llama):
    seqs = [t.token_ids for t in load_texts("random:3", tiny_llama, random_words=30,
                                            with_nll=False)]
    together = token_nll(tiny_llama, seqs)
    one_by_one = token_nll(tiny_llama, seqs, batch=1)
    for a, b, s in zip(together, one_by_one, seqs):
        assert a.shape == (len(s),)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(token_nll(tiny_llama, seqs[0]), together[0], atol=1e-4)


def test_without_bos_the_first_token_is_uniform(tiny_llama):
    loaded = _without_bos(tiny_llama)
    ids = tokenize(loaded, "the man said that the day was over")
    nll = token_nll(loaded, ids)
    assert nll[0] == pytest.approx(math.log(loaded.info.vocab_size))
    np.testing.assert_allclose(nll[1:], _hand_nll(loaded, ids, None), rtol=1e-5, atol=1e-4)


def _text(**kw) -> Text:
    fields = dict(text_id="t1", source="file", context_id=None, text="a b c",
                  token_ids=(4, 5, 6), token_nll=(1.0, 2.0, 0.5))
    return Text(**{**fields, **kw})


def test_h_lm_sums_nats_and_converts_to_bits():
    text = _text()
    assert text.h_lm() == pytest.approx(3.5)
    assert text.h_lm(2) == pytest.approx(3.0)
    assert text.h_lm(2, bits=True) == pytest.approx(3.0 / math.log(2))
    for n in (0, 4):
        with pytest.raises(ProtoscopeError, match="t1"):
            text.h_lm(n)
    with pytest.raises(ProtoscopeError, match="with_nll=False"):
        _text(token_nll=None).h_lm()


def test_prefix_and_its_errors_name_the_text():
    text = _text()
    assert text.prefix(2) == (4, 5)
    assert text.prefix(3) == (4, 5, 6)
    for n in (0, -1, 4):
        with pytest.raises(ProtoscopeError, match="'t1' has 3 tokens"):
            text.prefix(n)


def test_json_round_trip():
    for text in (_text(), _text(token_nll=None, context_id="c01", source="generated")):
        again = Text.from_json(json.loads(json.dumps(text.to_json())))
        assert again == text
    assert set(SOURCES) == {"builtin", "random", "generated", "file"}
    with pytest.raises(ProtoscopeError, match="token_ids"):
        Text.from_json({"text_id": "x", "source": "file", "text": "a"})
    with pytest.raises(ProtoscopeError, match="unknown source"):
        _text(source="web")


def test_load_texts_builtin_and_random(tiny_llama):
    texts = load_texts("builtin", tiny_llama)
    assert [t.text_id for t in texts] == [i for i, _ in builtin_texts()]
    assert all(t.source == "builtin" and t.context_id is None for t in texts)
    assert all(t.n_tokens >= 200 for t in texts)
    random = load_texts("random:2", tiny_llama, seed=3, random_words=25, with_nll=False)
    assert [t.text for t in random] == [t for _, t in random_texts(2, 3, 25)]
    assert all(t.token_nll is None for t in random)


# ---------------------------------------------------------------- the default model


@pytest.mark.integration
def test_builtin_texts_suit_the_default_model():
    from protoscope.geometry.models.loading import load_model

    loaded = load_model()
    texts = load_texts("builtin", loaded, with_nll=False)
    assert all(t.n_tokens >= 200 for t in texts)  # a capacity search climbs to 128-256
    # A pretrained model finds written English far likelier than a uniform guess (~10.8 nats).
    for nll in token_nll(loaded, [t.prefix(64) for t in texts[:2]]):
        assert np.isfinite(nll).all() and 0.5 < nll.mean() < 6.0


def test_windows_spec_loads_builtin_prose(tiny_llama):
    texts = load_texts("windows:3", tiny_llama, with_nll=False)
    assert [t.text_id for t in texts] == [i for i, _ in window_texts()[:3]]
    assert {t.source for t in texts} == {"builtin"} and all(t.n_tokens > 0 for t in texts)
