"""A universal m kept frozen: `fit --m-from RUN_OR_FILE` fits e only and never moves m."""
import pytest
import torch
from safetensors.torch import save_file

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter, Problem
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.store.runstore import RunStore
from test_reliability import cli, fit_args, ns, one_line  # noqa: F401  (ns: the fixture)


def _problems(loaded, texts=2, seeds=2, n=4):
    v = loaded.info.vocab_size
    out = []
    for i in range(texts):
        targets = tuple(torch.randint(4, v, (n,), generator=torch.Generator().manual_seed(7 + i)).tolist())
        out += [Problem(f"t{i}", s, targets, group=0) for s in range(seeds)]
    return out


@pytest.mark.parametrize("share", ["none", "m"])
def test_a_frozen_m_stays_bit_identical_through_a_fit(fit_llama, share):
    frozen = torch.randn(fit_llama.info.d_model, generator=torch.Generator().manual_seed(3))
    before = frozen.clone()
    # lr high and patience short: e restarts, and nothing may move or redraw m
    recipe = resolve_recipe("default", lr=0.05, max_steps=40, patience=5, max_restarts=3)
    groups = Fitter(Decoder(fit_llama, "bos e m*"), recipe, share=share,
                    frozen_m=frozen).fit(_problems(fit_llama))
    assert torch.equal(frozen, before), "the caller's tensor is never changed"
    assert any(s.restarts for g in groups for s in g.solutions), "restarts happened"
    for g in groups:
        assert all(torch.equal(row, before) for row in g.m)
        assert not any(torch.equal(row, before) for row in g.e)


def test_fit_m_from_a_run_and_a_file_keeps_that_m(ns, tmp_path, capfd):  # noqa: F811
    universal = tmp_path / "universal"
    rc, _, err = cli(fit_args(ns, share="m", max_steps=30, out=universal), capfd)
    assert rc == 0, err
    store = RunStore.open(universal)
    m = store.vectors()["m"]
    assert len(m) == 1
    file = tmp_path / "m.safetensors"
    save_file({"m": m[0].clone()}, str(file))
    for source in (universal, file):
        out = tmp_path / f"from-{source.name}"
        rc, _, err = cli(fit_args(ns, m_from=source, max_steps=30, out=out), capfd)
        assert rc == 0, err
        run = RunStore.open(out)
        assert len(run.solutions()) == 6
        assert all(torch.equal(row, m[0]) for row in run.vectors()["m"])
        assert run.manifest["config"]["m_from"] == str(source)
        assert len(run.manifest["m_from"]["m_sha256"]) == 64


def test_m_from_bad_sources_get_one_line(ns, tmp_path, capfd):  # noqa: F811
    per_solution = tmp_path / "per-solution"
    rc, _, err = cli(fit_args(ns, max_steps=5, out=per_solution), capfd)
    assert rc == 0, err
    width = RunStore.open(per_solution).vectors()["m"].shape[1]
    wide = tmp_path / "wide.safetensors"
    save_file({"m": torch.zeros(width + 1)}, str(wide))
    rc, _, err = cli(fit_args(ns, m_from=wide, out=tmp_path / "a"), capfd)
    one_line(rc, err, "wide.safetensors", f"d_model {width + 1}", f"d_model {width}")
    assert not (tmp_path / "a" / "manifest.json").exists()
    rc, _, err = cli(fit_args(ns, m_from=per_solution, out=tmp_path / "b"), capfd)
    one_line(rc, err, "do not share one m")
    rc, _, err = cli(fit_args(ns, m_from=tmp_path / "missing", out=tmp_path / "c"), capfd)
    one_line(rc, err, "neither a run directory nor a .safetensors file")
    fits = tmp_path / "fits.safetensors"
    save_file({"m": torch.zeros(width)}, str(fits))
    rc, _, err = cli(fit_args(ns, m_from=fits, arrangement="e*", out=tmp_path / "d"), capfd)
    one_line(rc, err, "--m-from needs an arrangement with m", "'e*'")
