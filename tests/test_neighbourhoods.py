"""Neighbourhoods: perturbation sweeps through the decoder, radii, purity, maps."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from protoscope.analysis import neighbourhoods as nb
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.tables import RECONSTRUCTED
from tiny_run import SEEDS, single_thread, tiny_run

RADII = (0.0, 0.05, 1.0)


@pytest.fixture(scope="module")
def tables():
    path, loaded = tiny_run()
    with single_thread():
        return nb.analyze(RunStore.open(path), loaded, radii=RADII, directions=3,
                          adversarial_steps=3, umap=False)


@pytest.fixture(scope="module")
def store():
    return RunStore.open(tiny_run()[0])


def test_zero_perturbation_keeps_the_stored_accuracy(tables, store):
    sweep = tables["neighbourhoods"]
    zero = sweep[sweep["radius"] == 0.0]
    stored = store.solutions().set_index("solution_id")["accuracy"]
    assert len(zero) == len(stored) * (3 + 1)  # 3 random trials + the adversarial start
    assert (zero["accuracy"].to_numpy() == stored.loc[zero["solution_id"]].to_numpy()).all()


def test_sweep_shape_and_accuracy_falls_with_radius(tables):
    sweep = tables["neighbourhoods"]
    assert list(sweep.columns) == nb.SWEEP_COLUMNS
    n = 3 * SEEDS
    assert len(sweep) == n * len(RADII) * (3 + 1)
    rand = sweep[sweep["direction"] == "random"].groupby("radius")["accuracy"].mean()
    assert rand.loc[1.0] < rand.loc[0.0] - 0.2


def test_adversarial_directions_are_worse_than_random_ones_at_the_same_radius(tables):
    """The ascent must find something. It starts on random ray 0, so without a working ascent
    it ties with that ray; here, for every solution and radius > 0, its point loses clearly
    more than ray 0 and than the random rays' mean, and near the solution it keeps fewer
    tokens on average."""
    sweep = tables["neighbourhoods"]
    moved = sweep[sweep["radius"] > 0]
    key = ["solution_id", "radius"]
    adv = moved[moved["direction"] == "adversarial"].set_index(key)
    rand = moved[moved["direction"] == "random"]
    ray0 = rand[rand["trial"] == 0].set_index(key)["loss"].loc[adv.index]
    mean = rand.groupby(key)["loss"].mean().loc[adv.index]
    assert len(adv) == 3 * SEEDS * (len(RADII) - 1)
    # summed loss in nats: the ascent gained 3.7 to 31 nats over either on one machine and 1.9
    # to 29 over the rays' mean on another (same code, other package builds): a margin of 1 nat
    # still fails a broken ascent, which ties ray 0 exactly
    assert (adv["loss"] > ray0 + 1.0).all()
    assert (adv["loss"] > mean + 1.0).all()
    near = moved[moved["radius"] == 0.05].groupby("direction")["accuracy"].mean()
    assert near["adversarial"] < near["random"] - 0.1  # 0.59 vs 0.90 on this run


def test_radii_table(tables, store):
    radii = tables["neighbourhood_radii"]
    assert list(radii.columns) == nb.RADII_COLUMNS and len(radii) == 3 * SEEDS
    for column in ("radius_99", "radius_50", "adversarial_radius_99"):
        assert (radii[column].isna() | radii[column].isin(RADII)).all()
    assert (radii["radius_50"].fillna(9) >= radii["radius_99"].fillna(9)).all()
    assert (radii["adversarial_radius_99"].fillna(9) <= radii["radius_99"].fillna(9)).all()
    # nearest same-text distance by hand for one solution
    rows, e, _ = store.solution_vectors()
    a = 0
    same = rows.index[(rows["text_id"] == rows["text_id"][a]) & (rows.index != a)]
    want = min(float((e[a] - e[b]).norm() / e[a].norm()) for b in same)
    got = radii.set_index("solution_id").loc[int(rows["solution_id"][a]), "nearest_same_text"]
    assert got == pytest.approx(want, rel=1e-6)


def test_first_radius_below():
    curve = pd.Series([1.0, 1.0, 0.98, 0.4], index=[0.0, 0.1, 0.2, 0.5])
    assert nb.first_radius_below(curve, RECONSTRUCTED) == 0.2
    assert nb.first_radius_below(curve, 0.5) == 0.5
    assert math.isnan(nb.first_radius_below(curve, 0.1))


def test_moving_e_and_m_and_bad_options():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    with single_thread():
        both, e_only = (nb.analyze(store, loaded, radii=(0.5,), directions=2,
                                   adversarial_steps=1, vectors=v, umap=False)["neighbourhoods"]
                        for v in ("e+m", "e"))
    assert set(both["radius"]) == {0.0, 0.5}
    # m is every solution's own here, so "e+m" moves m too: other points than "e" alone
    moved = both["radius"] > 0
    assert not np.allclose(both.loc[moved, "loss"], e_only.loc[moved, "loss"], rtol=1e-3)
    with pytest.raises(ProtoscopeError):
        nb.analyze(store, loaded, vectors="m")
    with pytest.raises(ProtoscopeError):
        nb.analyze(store, loaded, radii=(-0.1,))


def _clusters(per=6, k=3, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:k] * 5
    x = np.concatenate([c + rng.normal(0, spread, (per, d)) for c in centres])
    return x, np.repeat([f"t{i}" for i in range(k)], per)


def test_purity_is_one_on_separated_clusters_and_low_when_shuffled():
    x, labels = _clusters()
    purity = nb.knn_purity(x, labels, k_max=5)
    assert list(purity) == [1, 2, 3, 4, 5] and all(p == 1.0 for p in purity.values())
    assert nb.silhouette(x, labels) > 0.9
    shuffled = np.random.default_rng(1).permutation(labels)
    assert nb.knn_purity(x, shuffled, k_max=1)[1] < 0.7
    assert math.isnan(nb.silhouette(x[:3], labels[:3]))


def test_purity_table_on_the_tiny_run(tables):
    purity = tables["neighbourhood_purity"]
    assert set(purity["vector"]) == {"e", "m", "e+m"}
    assert set(purity["k"]) == {1, 2, 3, 4, 5}
    assert purity["purity"].between(0, 1).all()


def test_maps_have_one_row_per_solution_per_method(tables, store):
    maps = tables["maps"]
    n = len(store.solutions())
    counts = maps.groupby(["vector", "method"]).size()
    assert set(maps["method"]) == {"pca"} and (counts == n).all() and len(counts) == 3
    per_solution = maps.groupby(["vector", "method"])["solution_id"].nunique()
    assert (per_solution == n).all()
    assert maps["source"].notna().all() and np.isfinite(maps[["x", "y"]]).all().all()


def test_umap_waits_for_enough_points(store):
    rows, e, m = store.solution_vectors()
    sources = {t.text_id: t.source for t in store.texts()}
    maps = nb.map_table(rows, e, m, sources, umap=True, umap_min_points=len(rows) + 1)
    assert set(maps["method"]) == {"pca"}


def test_nearest_neighbours_from_an_index_match_the_exact_ones():
    """Past `exact_max` points the nearest other-text solution and the k-NN purity come from
    a pynndescent index: on 300 clustered points (60 texts x 5 seeds) they agree with every
    pair's answer; the same-text neighbour stays exact."""
    from types import SimpleNamespace

    from protoscope.analysis import neighbourhoods as nb

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(60, 16, generator=g) * 2
    V = (centres.repeat_interleave(5, 0) + 0.5 * torch.randn(300, 16, generator=g)).double()
    text = np.repeat([f"t{i}" for i in range(60)], 5)
    space = SimpleNamespace(V=V, mask=torch.ones_like(V), rows=pd.DataFrame({"text_id": text}))
    exact = nb.nearest_relative(space, exact_max=10**6)
    indexed = nb.nearest_relative(space, exact_max=50)
    assert np.allclose(indexed[0], exact[0])
    assert np.mean(np.isclose(indexed[1], exact[1])) >= 0.98
    x = V.numpy()
    assert nb.knn_purity(x, text, 5, exact_max=50) == pytest.approx(nb.knn_purity(x, text, 5), abs=0.01)
