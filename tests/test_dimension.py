"""The shape of the solution set, from the fit's side: fits inside a K-dimensional subspace
(geometry/engine/subspace.py) and the optimiser's kept paths (fit --trajectory-every, the
trajectories analysis)."""

import numpy as np
import pytest
import torch

import protoscope as ps
from protoscope.analysis import findings
from protoscope.geometry.engine.fitting import PATH_FIELDS, seeded_vector
from protoscope.geometry.engine.subspace import (Subspace, parse_subspaces, pca_basis,
                                                 random_basis)
from protoscope.geometry.models.loading import save_tiny_model
from protoscope.reports.compare import compare_sections
from protoscope.reports.report import report_sections

from tiny_run import single_thread

FIT = dict(texts="builtin:2", seeds=2, max_steps=60, quiet=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", "llama", 0,
                               initializer_range=0.3))


def test_subspace_specs_and_bases():
    assert parse_subspaces("8") == [Subspace(8, "random")]
    assert parse_subspaces("4, 8,16:pca") == [Subspace(k, "pca") for k in (4, 8, 16)]
    for bad in ("0", "8:sobol", "16,8", "x", "4,4"):
        with pytest.raises(ps.ProtoscopeError, match="--subspace must be"):
            parse_subspaces(bad)
    p = random_basis(40, 6, seed=1)
    assert torch.allclose(p.T @ p, torch.eye(6), atol=1e-5)
    assert torch.equal(p, random_basis(40, 6, seed=1)) and not torch.equal(p, random_basis(40, 6, seed=2))
    emb = torch.randn(200, 10, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 10)
    q = pca_basis(emb, 5)
    assert torch.allclose(q.T @ q, torch.eye(5), atol=1e-5)
    assert q[10:, :3].abs().max() == 0 and q[:10, 3:].abs().max() == 0  # e gets 3, m gets 2
    assert q[:10, 0].abs().argmax() == 0  # the widest embedding direction first


def test_a_subspace_fit_stays_in_its_subspace_and_resumes(model, tmp_path):
    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, subspace="2,32:random", **FIT)
    rows = run.solutions
    assert sorted(set(rows["subspace"])) == ["2:random", "32:random"] and len(rows) == 8
    assert (rows["restarts"] == 0).all()
    _, e, m = run.vectors()
    d = e.shape[1]
    for i, row in rows.iterrows():  # [e; m] - x0 lies in the span of the seed's basis
        x0 = torch.cat([seeded_vector(f"{row['text_id']}|{row['seed']}|0|{v}", d, _scale(run))
                        for v in ("e", "m")])
        basis = random_basis(2 * d, int(row["subspace"].split(":")[0]), int(row["seed"]))
        offset = torch.cat([e[i], m[i]]) - x0
        assert torch.allclose(basis @ (basis.T @ offset), offset, atol=1e-4)
    wide = rows[rows["subspace"] == "32:random"]["accuracy"].mean()
    assert wide >= rows[rows["subspace"] == "2:random"]["accuracy"].mean()
    with single_thread():  # nothing left to fit
        assert len(ps.fit(tmp_path / "run", 3, model=model, subspace="2,32:random", **FIT).solutions) == 8
    with pytest.raises(ps.ProtoscopeError, match="does not combine with --share"):
        ps.fit(tmp_path / "other", 3, model=model, subspace="4", share="m", **FIT)


def _scale(run) -> float:
    from protoscope.geometry.engine.decoder import Decoder
    from protoscope.geometry.engine.fitting import Fitter
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.models.loading import load_model

    loaded = load_model(run.manifest["config"]["model"])
    return Fitter(Decoder(loaded, "bos e m*"), resolve_recipe("default")).scale


def test_kept_paths_start_at_the_init_end_at_the_solution_and_are_analysed(model, tmp_path):
    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, trajectory_every=5, **FIT)
        ps.analyze(run, only=["trajectories"])
    paths = run.store.trajectories()
    rows, e, m = run.vectors()
    assert set(paths) == set(rows["solution_id"])
    d = e.shape[1]
    for i, row in rows.iterrows():
        path = paths[int(row["solution_id"])].numpy()
        lead = len(PATH_FIELDS)
        assert path.shape[1] == lead + 2 * d
        assert np.allclose(path[-1, lead:], torch.cat([e[i], m[i]]).numpy())  # the kept vectors
        assert path[-1, 0] == row["steps"] and abs(path[-1, 2] - row["accuracy"]) < 1e-6
        steps = path[:-1, 0]
        assert steps[0] == 0 and (np.diff(steps[path[:-1, 1] == path[-2, 1]]) == 5).all()
    table = run.table("trajectories")
    assert len(table) == len(rows) and ((table["pc1"] > 0) & (table["pc12"] <= 1 + 1e-9)).all()
    assert (table["pc12"] >= table["pc1"]).all()
    assert (table["path_length"] >= table["displacement"] - 1e-6).all()
    exact = table.dropna(subset=["first_exact_step"])
    assert ((exact["first_exact_share"] >= 0) & (exact["first_exact_share"] <= 1)).all()
    row = run.findings.set_index("finding").loc["path variance in its first two components"]
    assert row["verdict"] == "inconclusive" and row["claim"].startswith(findings.NO_PAPER_VALUE)
    states = [fig.layout.title.text for s in report_sections(run.store) if s.anchor == "shape"
              for fig in s.blocks if hasattr(fig, "layout")]
    assert any("optimisation paths" in t for t in states)
    text = rows["text_id"].iloc[0]
    section = next(s for s in compare_sections(run.store, text) if s.anchor == "trajectories")
    assert len(section.blocks[0].data) == 2  # the text's two seeds in one plane


def test_the_dimension_study_finds_the_smallest_k_and_says_it_is_an_upper_bound(model, tmp_path):
    from protoscope.workflows.protocols import SUBSPACE_KINDS
    from protoscope.geometry.engine.subspace import KINDS

    assert SUBSPACE_KINDS == KINDS
    with single_thread():
        result = ps.study("dimension", tmp_path / "dim", model=model, texts="builtin:2",
                          dims=(1, 64), length=3, max_steps=80, quiet=True)
    intrinsic = result.store.analysis("intrinsic_dimension")
    dimension = result.store.analysis("dimension")
    assert set(dimension["dim"]) == {1, 64} and len(intrinsic) == 2
    for _, row in intrinsic.iterrows():  # d_int is the smallest K some seed reconstructed at
        ok = dimension[(dimension["text_id"] == row["text_id"]) & dimension["reconstructed"]]
        assert row["found"] == bool(len(ok))
        assert (row["d_int"] == ok["dim"].min()) if len(ok) else np.isnan(row["d_int"])
    assert set(result.summary.columns) >= {"source", "texts", "found", "median_d_int"}
    found = ps.open_run(tmp_path / "dim").findings
    row = found[found["finding"].str.startswith("intrinsic dimension")]
    assert intrinsic["found"].any() and len(row) == 1  # 64 dimensions reconstruct 3 tokens here
    assert row["detail"].iloc[0].startswith("an upper bound")
    assert row["evidence"].iloc[0] == "bounded search" and row["verdict"].iloc[0] == "inconclusive"
    assert result.store.manifest["protocol"]["name"] == "dimension"


def test_a_bad_subspace_is_one_line_on_the_command_line(tmp_path, capsys):
    from protoscope.cli import main

    code = main(["fit", "--texts", "builtin:1", "--length", "3", "--subspace", "8:sobol",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--subspace must be" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_subspace_run_resumes_with_a_wider_grid_fitting_only_the_new_k(model, tmp_path):
    with single_thread():
        first = len(ps.fit(tmp_path / "run", 3, model=model, subspace="2", **FIT).solutions)
        wider = ps.fit(tmp_path / "run", 3, model=model, subspace="2,8", **FIT)
    assert first == 4 and len(wider.solutions) == 8
    assert sorted(set(wider.solutions["subspace"])) == ["2:random", "8:random"]
    with pytest.raises(ps.ProtoscopeError, match="differs in: subspace"):  # another kind
        ps.fit(tmp_path / "run", 3, model=model, subspace="8:pca", **FIT)


def test_d_int_is_the_smallest_k_any_seed_reconstructed():
    import pandas as pd

    from protoscope.analysis.dimension import best_per_dimension, intrinsic_dimensions

    rows = pd.DataFrame({  # text a: seed 1 reconstructs at 16, both at 64; text b never
        "text_id": ["a"] * 6 + ["b"] * 3, "length": 8, "seed": [0, 1] * 3 + [0] * 3,
        "subspace": ["4:random"] * 2 + ["16:random"] * 2 + ["64:random"] * 2
                    + ["4:random", "16:random", "64:random"],
        "accuracy": [0.2, 0.5, 0.9, 1.0, 1.0, 1.0, 0.1, 0.3, 0.95]})
    dimension = best_per_dimension(rows, {})
    a = dimension[dimension["text_id"] == "a"].set_index("dim")
    assert a.loc[16, "accuracy"] == 1.0 and a.loc[16, "seeds"] == 2 and not a.loc[4, "reconstructed"]
    per_text = intrinsic_dimensions(dimension, {}).set_index("text_id")
    assert per_text.loc["a", "d_int"] == 16 and per_text.loc["a", "dims_tried"] == "4,16,64"
    assert np.isnan(per_text.loc["b", "d_int"]) and not per_text.loc["b", "found"]


def test_a_path_is_described_over_its_last_restart():
    from protoscope.analysis.trajectories import describe_path, last_segment

    d = 3
    first = np.c_[[0, 10], [0, 0], [0.1, 0.2], [5, 4], np.full((2, 2 * d), 9.0)]
    then = np.c_[[20, 30, 40], [1, 1, 1], [0.3, 1.0, 1.0], [3, 1, 0],
                 np.outer([0, 1, 2], np.ones(2 * d))]
    segment = last_segment(np.vstack([first, then]))
    assert segment[:, 0].tolist() == [20, 30, 40]
    described = describe_path(segment[:, 4:], segment[:, 2], segment[:, 0])
    assert np.isclose(described["pc1"], 1.0)  # a straight line: all variance in PC1
    assert np.isclose(described["path_length"], described["displacement"])
    assert described["first_exact_step"] == 30 and np.isclose(described["first_exact_share"], 0.5)


def test_a_path_in_flight_survives_an_interruption(fit_llama, tmp_path):
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig, fit_run
    from protoscope.geometry.store.texts import Text, tokenize

    texts = [Text("t0", "file", None, "the quick brown fox", tokenize(fit_llama, "the quick brown fox"))]
    config = RunConfig(model=fit_llama.info.name, texts="one", seeds=1, lengths=(4,),
                       recipe=resolve_recipe("default", max_steps=60, patience=0),
                       trajectory_every=2)
    steps = []

    def stop(acc):
        steps.append(1)
        if len(steps) == 9:
            raise KeyboardInterrupt

    with single_thread(), pytest.raises(KeyboardInterrupt):
        fit_run(tmp_path / "run", config, loaded=fit_llama, texts=texts, on_step=stop,
                checkpoint_every=(4, 1e9))
    with single_thread():
        store = fit_run(tmp_path / "run", config, loaded=fit_llama, texts=texts).store
    (path,) = store.trajectories().values()
    kept = path[:-1, 0].numpy()  # every second step from 0, across the interruption
    assert kept[0] == 0 and (np.diff(kept) == 2).all() and kept[-1] > 8
    assert path[-1, 0] == store.solutions()["steps"].iloc[0]
