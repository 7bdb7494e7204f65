"""The run store: round trip, atomic appends, and clear errors for damaged files."""
import os

import pytest
import torch

from protoscope.geometry import store as store_module
from protoscope.geometry.errors import StoreError
from protoscope.geometry.store import RunStore
from protoscope.geometry.texts import Text


def _row(text_id, seed, e_row, m_row):
    return {"text_id": text_id, "seed": seed, "length": 4, "arrangement": "bos e m*", "share": "none",
            "share_group": -1, "e_row": e_row, "m_row": m_row, "accuracy": 1.0, "c_tokens": 4,
            "loss": 0.1, "steps": 10, "restarts": 0, "seconds": 0.5, "converged": True,
            "status": "converged", "failure": None, "init_from": -1, "recipe": "default",
            "method": "one-step"}


@pytest.fixture
def store(tmp_path):
    texts = [Text("a", "file", None, "a text", (5, 6, 7, 8)), Text("b", "file", "c0", "b text", (9, 10, 11, 12))]
    return RunStore.create(tmp_path / "run", {"model": {"name": "tiny", "d_model": 3}}, texts)


def test_round_trip_keeps_vectors_and_rows(store):
    e, m = torch.randn(2, 3), torch.randn(1, 3)  # m shared: stored once
    ids = store.append([_row("a", 0, 0, 0), _row("a", 1, 1, 0)], e, m)
    ids += store.append([_row("b", 0, 0, 0)], e[:1] * 2, m * 3)
    again = RunStore.open(store.path)
    rows, e2, m2 = again.solution_vectors()
    assert ids == [0, 1, 2] and list(rows["text_id"]) == ["a", "a", "b"]
    assert torch.equal(e2[:2], e) and torch.equal(m2[0], m[0]) and torch.equal(m2[1], m[0])
    assert torch.equal(e2[2], e[0] * 2) and torch.equal(m2[2], m[0] * 3)
    assert [t.text_id for t in again.texts()] == ["a", "b"] and again.texts()[1].context_id == "c0"


def test_append_interrupted_between_files_loses_nothing_finished(store, monkeypatch):
    store.append([_row("a", 0, 0, 0)], torch.randn(1, 3), torch.randn(1, 3))
    before = RunStore.open(store.path).solution_vectors()
    real_replace = os.replace

    def crash_on_rows(src, dst):
        if str(dst).endswith(".parquet"):
            raise KeyboardInterrupt  # killed after the vectors were written, before the rows
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "replace", crash_on_rows)
    with pytest.raises(KeyboardInterrupt):
        store.append([_row("b", 0, 0, 0)], torch.randn(1, 3), torch.randn(1, 3))
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    rows, e, m = RunStore.open(store.path).solution_vectors()
    assert list(rows["text_id"]) == ["a"]
    assert torch.equal(e, before[1]) and torch.equal(m, before[2])
    assert not [p for p in store.path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("name, damage", [
    ("manifest.json", b"{not json"),
    ("solutions.parquet", b"PAR1 garbage"),
    ("solutions.safetensors", b"\x00\x01garbage"),
    ("texts.jsonl", b"{\"text_id\": 1"),
])
def test_damaged_files_are_named(store, name, damage):
    store.append([_row("a", 0, 0, 0)], torch.randn(1, 3), torch.randn(1, 3))
    (store.path / name).write_bytes(damage)
    with pytest.raises(StoreError, match=name.replace(".", r"\.")):
        RunStore.open(store.path)


def test_not_a_store_and_busy(tmp_path, store):
    with pytest.raises(StoreError, match="not a protoscope run"):
        RunStore.open(tmp_path)
    with store.lock():
        with pytest.raises(StoreError, match="in use"):
            with RunStore(store.path).lock():
                pass
