"""The local spectrum (analysis/spectrum.py): its Hessian-vector products and top eigenvalues
agree with the dense Hessian of a tiny float64 model, and the analysis writes tables, a
findings row and report figures that say a censored stiff count is a lower bound."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from protoscope.analysis import findings, spectrum
from protoscope.analysis.run import run_analyses
from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.models.loading import tiny_model
from protoscope.geometry.store.runstore import RunStore
from protoscope.reports.report import report_sections

from tiny_run import ARRANGEMENT, single_thread, tiny_run


@pytest.fixture(scope="module")
def float64():
    """A tiny Llama in float64 (built in float32, then cast), eager attention: its dense
    Hessian by double backward is the reference."""
    loaded = tiny_model("llama", seed=1, attn_implementation="eager", initializer_range=0.3,
                        hidden_size=16, intermediate_size=32)
    return dataclasses.replace(loaded, model=loaded.model.double(), dtype=torch.float64)


def _point(loaded, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = loaded.info.d_model
    e, m = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    target = torch.randint(3, loaded.info.vocab_size, (n,), generator=g)
    return e, m, target


def _dense(decoder, e, m, target):
    d = e.shape[0]

    def loss(x):
        return decoder(x[None, :d], x[None, d:], target[None], grad=True).total_loss.sum()
    return torch.autograd.functional.hessian(loss, torch.cat([e, m])).numpy()


def test_products_and_top_eigenvalues_match_the_dense_hessian(float64):
    decoder = Decoder(float64, ARRANGEMENT)
    e, m, target = _point(float64)
    dense = _dense(decoder, e, m, target)
    # The decoder's logits are float32 (decoder.py), so even this float64 model's loss has
    # float32 rounding: the reference is exact to ~1e-7 and a difference quotient at the
    # default step to ~1e-4 of the largest entry.
    hessian = spectrum.LocalHessian(decoder, e, m, target, step=1e-3)
    v = torch.randn(2 * e.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    reference = dense @ v.numpy()
    assert np.abs(hessian.product(v).numpy() - reference).max() < 1e-3 * np.abs(reference).max()
    d = e.shape[0]
    for block, part in (("e", dense[:d, :d]), ("m", dense[d:, d:]), ("e+m", dense)):
        found, converged = spectrum.top_eigenvalues(hessian.operator(block), 5, seed=0, tol=1e-8)
        exact = np.sort(np.linalg.eigvalsh((part + part.T) / 2))[::-1][:5]
        assert converged
        assert np.allclose(found, exact, rtol=1e-3, atol=1e-3 * abs(exact[0])), block


def test_the_analysis_writes_spectra_a_findings_row_and_figures(tmp_path):
    path, loaded = tiny_run()
    shutil.copytree(path, tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    with single_thread():
        run_analyses(store, only=["spectrum"], loaded=loaded, quiet=True,
                     options={"spectrum": {"eigs": 3, "solutions": 2}})
    table, values = store.analysis("spectrum"), store.analysis("spectrum_eigenvalues")
    assert set(table["block"]) == {"e", "m", "e+m"} and table["solution_id"].nunique() == 2
    assert len(set(table.drop_duplicates("solution_id")["text_id"])) == 2  # first seeds first
    assert (table["k"] == 3).all() and (table["stiff"] <= table["k"]).all()
    assert (table["stiff_censored"] == (table["stiff"] == table["k"])).all()
    assert np.allclose(table["threshold"], 0.01 * table["top"])
    ranked = values.sort_values(["solution_id", "block", "rank"])
    assert (ranked.groupby(["solution_id", "block"])["eigenvalue"].apply(
        lambda s: bool((np.diff(s.to_numpy()) <= 1e-12).all()))).all()  # descending
    row = findings.write(store).set_index("finding").loc["stiff Hessian directions (top-k, e+m)"]
    assert row["verdict"] == "inconclusive" and row["claim"].startswith(findings.NO_PAPER_VALUE)
    if table[table["block"] == "e+m"]["stiff_censored"].any():
        assert row["detail"].startswith(findings.LOWER_BOUND) and row["evidence"] == "bounded search"
    section = next(s for s in report_sections(store) if s.anchor == "shape")
    assert sum(hasattr(b, "data") for b in section.blocks) >= 1  # the spectra figure drew


def test_a_censored_count_is_said_as_a_lower_bound():
    import pandas as pd

    table = pd.DataFrame({"solution_id": [0, 1], "text_id": ["a", "b"], "block": "e+m",
                          "k": 4, "top": [10.0, 8.0], "threshold": [0.1, 0.08], "stiff": [4, 2],
                          "stiff_censored": [True, False]})
    row = findings._spectrum_row(table, seed=0)
    assert row["detail"].startswith("a lower bound: the search reached its top 4 eigenvalues, "
                                    "all stiff, on 1 of 2 solutions")
    assert row["evidence"] == "bounded search" and row["verdict"] == "inconclusive"
    uncensored = findings._spectrum_row(table.assign(stiff_censored=False, stiff=[1, 2]), seed=0)
    assert uncensored["evidence"] == "observed" and not uncensored["detail"].startswith("a lower")
