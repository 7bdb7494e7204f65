"""The run store: round trip, atomic appends, and clear errors for damaged files."""
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from protoscope.geometry.store import parts as parts_module
from protoscope.geometry.store import runstore as store_module
from protoscope.geometry.errors import StoreError
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import Text


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
    store.compact()  # the base files, as a finished run has them
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


# ------------------------------------------------------------------------------ the parts layout


def _rows(start: int, count: int) -> list[dict]:
    return [_row(f"t{start + i}", 0, i, i) for i in range(count)]


def _vectors(start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors that name their solution: e of solution i is all i, m all -i."""
    ids = torch.arange(start, start + count, dtype=torch.float32)[:, None].expand(count, 3)
    return ids.clone(), -ids.clone()


def _append(store, start: int, count: int = 1) -> list[int]:
    return store.append(_rows(start, count), *_vectors(start, count))


def _check_prefix(path, at_least: int = 0) -> int:
    """The store at `path` opens and holds solutions 0..k-1 with their own vectors; returns k."""
    rows, e, m = RunStore.open(path).solution_vectors()
    k = len(rows)
    assert list(rows["solution_id"]) == list(range(k)) and k >= at_least
    assert list(rows["text_id"]) == [f"t{i}" for i in range(k)]
    assert torch.equal(e, _vectors(0, k)[0]) and torch.equal(m, _vectors(0, k)[1])
    return k


def test_an_append_reads_nothing_already_stored(store, monkeypatch):
    """The cost of an append is its own rows: no stored part or base file is opened."""
    for i in range(3):
        _append(store, i)
    store.compact()
    _append(store, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("an append read stored solutions")

    for name in ("read_parquet", "read_table"):
        monkeypatch.setattr(store_module.pd, name, refuse, raising=False)
    monkeypatch.setattr(store_module, "load_file", refuse)
    monkeypatch.setattr(parts_module, "safe_open", refuse)
    monkeypatch.setattr(parts_module.pq, "read_table", refuse)
    assert _append(store, 4) == [4]
    monkeypatch.undo()
    assert _check_prefix(store.path) == 5


def test_parts_merge_in_tiers_and_compact_into_the_base(store):
    """300 single appends leave a bounded number of parts; compaction folds them back into the
    two files of the old layout, and the run reads the same before and after."""
    for i in range(300):
        _append(store, i)
    index = store.parts.index()
    assert len(index["parts"]) == 1 + 2 + 12  # 300 = 1 x 256 + 2 x 16 + 12 (tiers of 16)
    assert _check_prefix(store.path) == 300
    assert store.compact()
    assert not (store.path / "parts").exists()
    assert (store.path / "solutions.parquet").exists() and (store.path / "solutions.safetensors").exists()
    assert _check_prefix(store.path) == 300
    assert _append(store, 300) == [300] and _check_prefix(store.path) == 301


def test_a_writers_lock_compacts_on_a_clean_exit_only(store):
    with store.lock():
        _append(store, 0, 2)
        assert store.parts.index() is not None
    assert store.parts.index() is None and _check_prefix(store.path) == 2
    with pytest.raises(RuntimeError):
        with store.lock():
            _append(store, 2)
            raise RuntimeError("stopped")
    assert store.parts.index() is not None  # left as parts, which read the same
    assert _check_prefix(store.path) == 3


def test_a_run_in_the_old_layout_opens_and_takes_appends(tmp_path):
    """Runs written before parts existed: only solutions.parquet and .safetensors."""
    old = RunStore.create(tmp_path / "old", {"model": {"name": "tiny", "d_model": 3}}, [])
    _append(old, 0, 3)
    old.compact()
    assert sorted(p.name for p in old.path.iterdir() if p.name.startswith("solutions")) == [
        "solutions.parquet", "solutions.safetensors"]
    assert _check_prefix(old.path) == 3
    assert _append(old, 3, 2) == [3, 4]
    assert store_module.RunStore(old.path).parts.index()["base"]["rows"] == 3
    assert _check_prefix(old.path) == 5


@pytest.mark.parametrize("suffix, damage", [
    (".parquet", "truncate"), (".safetensors", "truncate"), (".parquet", "delete")])
def test_a_torn_part_is_named(store, suffix, damage):
    for i in range(3):
        _append(store, i)
    part = store.path / "parts" / f"{store.parts.index()['parts'][1]['name']}{suffix}"
    if damage == "truncate":
        os.truncate(part, part.stat().st_size - 7)
    else:
        part.unlink()
    with pytest.raises(StoreError, match=re.escape(str(part))):
        RunStore.open(store.path)


def test_a_second_writer_is_refused_while_the_lock_is_held(store):
    """Another process holds the run's lock: an append here is refused, not interleaved."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from protoscope.geometry.store.runstore import RunStore\n"
         "with RunStore(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)",
         str(store.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="in use by another protoscope process"):
            _append(store, 0)
        with pytest.raises(StoreError, match="in use"):
            store.compact()
    finally:
        holder.kill()
        holder.wait()
    assert _append(store, 0) == [0]


def _finish(path, total: int = 4) -> None:
    """Append the solutions `path` lacks of 0..total-1 under the lock (which then compacts)."""
    store = RunStore(path)
    with store.lock():
        for i in range(len(store.solutions()), total):
            _append(store, i)


def _kill_at(path, step: int) -> int:
    """In a forked child: append 4 solutions one by one under the lock (parts merge at FANOUT 2,
    the lock's release compacts), SIGKILLed just before its `step`-th rename or unlink; returns
    the child's exit status (negative: the signal)."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no finally blocks once killed
        try:
            calls = [0]
            real_replace, real_unlink = os.replace, os.unlink

            def killing(real):
                def call(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)
                return call

            parts_module.FANOUT = 2
            os.replace, os.unlink = killing(real_replace), killing(real_unlink)
            _finish(path)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_sigkill_at_any_write_of_an_append_merge_or_compaction_loses_only_that_write(tmp_path):
    """Kill the writer before each of its renames and unlinks in turn (appends, tier merges,
    compaction): the store always opens with a prefix of what was appended, every solution with
    its own vectors, and a writer taking the lock again finishes it."""
    path = tmp_path / "run"
    RunStore.create(path, {"model": {"name": "tiny", "d_model": 3}}, [])
    assert _kill_at(path, 10**6) == 0 and _check_prefix(path) == 4  # how it ends unkilled
    killed = 0
    for step in range(1, 200):
        path = tmp_path / f"run-{step}"
        RunStore.create(path, {"model": {"name": "tiny", "d_model": 3}}, [])
        status = _kill_at(path, step)
        if status == 0:
            break
        assert status == -signal.SIGKILL, status
        killed += 1
        _check_prefix(path)
        _finish(path)  # resumed by a new writer, which cleans up
        assert _check_prefix(path) == 4
        assert not (path / "parts").exists()
        assert not [p for p in path.rglob("*") if ".tmp-" in p.name]
    assert killed >= 20, killed  # appends, merges and the compaction each had kill points


def test_protoscope_compact_folds_a_runs_parts(store, capsys):
    from protoscope.cli import main

    _append(store, 0, 2)
    _append(store, 2)
    assert main(["compact", str(store.path)]) == 0
    assert f"compact: {store.path}: 3 solutions" in capsys.readouterr().out
    assert not (store.path / "parts").exists() and _check_prefix(store.path) == 3
    assert main(["compact", str(store.path)]) == 0
    assert "(already compact)" in capsys.readouterr().out


def test_a_run_written_before_the_start_column_opens_and_takes_rows_with_it(tmp_path):
    import pandas as pd

    old = RunStore.create(tmp_path / "old", {"model": {"name": "tiny", "d_model": 3}}, [])
    _append(old, 0, 2)
    old.compact()
    rows = old.path / "solutions.parquet"
    pd.read_parquet(rows).drop(columns="start").to_parquet(rows)  # as an older version wrote it
    opened = RunStore.open(old.path)
    assert "start" not in opened.solutions().columns and len(opened.solutions()) == 2
    opened.append([{**_row("b", 0, 0, 0), "start": "embedding"}], torch.zeros(1, 3), torch.zeros(1, 3))
    starts = RunStore.open(old.path).solutions()["start"]
    assert starts.isna().tolist() == [True, True, False] and starts.iloc[2] == "embedding"
