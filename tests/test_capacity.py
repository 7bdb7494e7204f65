"""Does the capacity search climb the length grid as promised: warm starts from the previous
length, a (text, seed) stops after two failed lengths in a row, and [mem] sees the same BOS
prefix as the one-step arrangement?"""

from __future__ import annotations

from protoscope.geometry.runs.capacity import capacity_search, length_grid, method_arrangement
from protoscope.geometry.tables import capacity_per_text
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.runs.fit import RunConfig, prepare_run
from tiny_run import TEXTS, single_thread, tiny_loaded


def _search(tmp_path, max_steps: int, lengths=(2, 4, 6), methods=("one-step", "mem")):
    spec = tmp_path / "texts.txt"
    spec.write_text("\n\n".join(text for *_, text in TEXTS[:2]))
    config = RunConfig(texts=str(spec), seeds=1, lengths=lengths, kind="capacity",
                       methods=methods, recipe=resolve_recipe("default", max_steps=max_steps))
    with single_thread():
        store, loaded, texts = prepare_run(tmp_path / "run", config, loaded=tiny_loaded())
        table = capacity_search(store, loaded, texts, config)
    return store, table


def test_mem_gets_the_bos_prefix_of_the_run():
    assert method_arrangement("mem", "bos e m*") == "bos mem"
    assert method_arrangement("mem", "e m*") == "mem"
    assert method_arrangement("one-step", "bos e m*+1") == "bos e m*+1"


def test_paper_grid_is_powers_of_sqrt_two():
    assert length_grid(64) == [4, 5, 8, 11, 16, 22, 32, 45, 64]
    assert length_grid(3000)[-3:] == [1448, 2048, 2896]


def test_capacity_climbs_with_warm_starts(tmp_path):
    store, table = _search(tmp_path, max_steps=300)
    assert set(zip(table["method"], table["arrangement"])) == {("one-step", "bos e m*"),
                                                              ("mem", "bos mem")}
    rows = store.solutions()
    for _, g in rows.groupby(["text_id", "seed", "method"]):
        g = g.sort_values("length")
        # Every length after the first starts from the same text's solution one length below.
        assert g["init_from"].tolist() == [-1] + g["solution_id"].tolist()[:-1]
    caps = capacity_per_text(table)
    assert len(caps) == 4 and caps["capacity"].isin([0, 2, 4, 6]).all()
    assert (caps["capacity"] > 0).any()  # the tiny model reconstructs short prefixes


def test_two_failed_lengths_stop_the_climb(tmp_path):
    store, table = _search(tmp_path, max_steps=1, methods=("one-step",))
    assert not table["reconstructed"].any()  # one step reconstructs nothing
    assert sorted(set(table["length"])) == [2, 4]  # 6 is never tried
    assert capacity_per_text(table)["capacity"].eq(0).all()


def test_a_resumed_search_refits_nothing(tmp_path):
    store, first = _search(tmp_path, max_steps=300, methods=("one-step",))
    _, again = _search(tmp_path, max_steps=300, methods=("one-step",))
    assert len(again) == len(first) == len(store.solutions())
