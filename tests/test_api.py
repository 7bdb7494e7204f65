"""The Python API (`import protoscope as ps`) is the command line's own steps: the same fit
gives the same solutions either way, options are checked the same way, and importing the
package loads nothing heavy."""

import subprocess
import sys

import numpy as np
import pytest

import protoscope as ps
from protoscope.cli import main
from protoscope.geometry.engine import fitting
from protoscope.geometry.models.loading import save_tiny_model
from protoscope.workflows import settings

from tiny_run import single_thread

FIT = dict(texts="builtin:2", seeds=2, max_steps=40, quiet=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", "llama", 0,
                               initializer_range=0.3))


def test_the_cli_and_the_api_fit_the_same_solutions(model, tmp_path, capsys):
    with single_thread():
        assert main(["fit", "--model", model, "--texts", "builtin:2", "--seeds", "2", "--length",
                     "3", "--max-steps", "40", "--quiet", "--out", str(tmp_path / "cli")]) == 0
        run = ps.fit(tmp_path / "api", 3, model=model, **FIT)
    by_cli = ps.open_run(tmp_path / "cli")
    assert isinstance(run, ps.Run) and len(run.solutions) == len(by_cli.solutions) == 4
    a, b = run.vectors(), by_cli.vectors()
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])  # e and m, bit for bit
    cols = ["text_id", "seed", "accuracy", "steps"]
    assert run.solutions[cols].equals(by_cli.solutions[cols])
    assert run.manifest["config"] == by_cli.manifest["config"]


def test_a_run_analysed_and_reported_through_the_api(model, tmp_path):
    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, **FIT)
        timings = ps.analyze(run, only=["uniqueness"], options={"uniqueness": {"semantic": False}})
    assert set(timings) == {"uniqueness"} and run.table("uniqueness") is not None
    assert "same-text solutions closer than different-text" in set(run.findings["finding"])
    assert ps.report(run).is_file()
    with single_thread():  # nothing changed: up to date
        assert ps.analyze(run, only=["uniqueness"],
                          options={"uniqueness": {"semantic": False}}) == {"uniqueness": None}


@pytest.mark.parametrize("call, says", [
    (lambda out: ps.fit(out, 3, seeds=0), "--seeds must be an integer >= 1, got 0"),
    (lambda out: ps.fit(out, 3, sedes=2), "fit has no option 'sedes'"),
    (lambda out: ps.fit(out, 0), "--length must be at least 1"),
    (lambda out: ps.capacity(out, lengths=(4, 2)), "--lengths must be increasing"),
    (lambda out: ps.analyze(out), "not a protoscope run"),
    (lambda out: ps.study("nothing", out), "unknown study 'nothing'"),
])
def test_bad_api_input_is_one_line_and_fits_nothing(call, says, tmp_path):
    with pytest.raises(ps.ProtoscopeError, match=says) as caught:
        call(tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_importing_the_package_loads_no_model_library():
    code = ("import sys, protoscope, protoscope.cli; protoscope.cli.build_parser(); "
            "sys.exit(sorted(m for m in ('torch', 'pandas', 'transformers', 'plotly', 'scipy') "
            "if m in sys.modules) or None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_api_names_resolve_and_the_declared_choices_are_the_engines():
    for name in ps.__all__:
        assert getattr(ps, name) is not None, name
    with pytest.raises(AttributeError):
        ps.no_such_name
    assert settings.SHARES == fitting.SHARES
    assert "seeds" in ps.describe("fit") and "[connectivity]" in ps.describe("analyze")


# -- the notebook face: texts a caller holds, figures inline, TensorBoard curves -------------------
def test_texts_given_as_a_list_or_series_are_fitted_and_pinned(model, tmp_path):
    texts = ["the cat sat on the mat today", "a dog ran in the park again"]
    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, **{**FIT, "texts": texts})
    assert [t.text for t in run.texts] == texts and len(run.solutions) == 4
    assert run.manifest["config"]["texts"].startswith("given:2:")
    with single_thread():  # the same texts as a Series: the same run, resumed (nothing to fit)
        again = ps.fit(tmp_path / "run", 3, model=model,
                       **{**FIT, "texts": __import__("pandas").Series(texts)})
    assert len(again.solutions) == 4
    with pytest.raises(ps.ProtoscopeError, match="differs in: texts"):
        ps.fit(tmp_path / "run", 3, model=model, **{**FIT, "texts": texts[:1] + ["other words"]})


def test_a_runs_figures_are_the_reports_plotly_figures(model, tmp_path):
    import plotly.graph_objects as go

    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, **FIT)
        ps.analyze(run, only=["uniqueness"], options={"uniqueness": {"semantic": False}})
    names = list(run.figures())
    assert any(n.startswith("uniqueness-01") for n in names), names
    figure = run.figure("uniqueness-01")
    assert isinstance(figure, go.Figure) and len(figure.data) > 0
    assert figure.to_plotly_json() == run.figures()[next(n for n in names
                                                          if n.startswith("uniqueness-01"))].to_plotly_json()
    with pytest.raises(ps.ProtoscopeError, match="names no figure of .*; its figures: "):
        run.figure("no-such-figure")
    with pytest.raises(ps.ProtoscopeError, match="names several figures"):
        run.figure("uniqueness")


def _scalars(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_fit_and_curve_training_write_tensorboard_events(model, tmp_path):
    pytest.importorskip("tensorboard")
    with single_thread():
        run = ps.fit(tmp_path / "run", 3, model=model, log_dir=tmp_path / "tb", **FIT)
        plain = ps.fit(tmp_path / "plain", 3, model=model, **FIT)
        ps.analyze(run, only=["connectivity"], log_dir=tmp_path / "tb-curves",
                   options={"connectivity": {"grid": 5, "check_grid": 5, "bezier_steps": 6,
                                             "check_every": 0, "cross_text_pairs": 0,
                                             "min_accuracy": 0.0, "hold_accuracy": 1.01}})
    assert all(np.array_equal(a, b) for a, b in zip(run.vectors()[1:], plain.vectors()[1:]))
    fit = _scalars(tmp_path / "tb")
    group = next(t for t in fit if t.startswith("fit/loss/")).removeprefix("fit/loss/")
    loss, worst = fit[f"fit/loss/{group}"], fit[f"fit/worst_accuracy/{group}"]
    mean = fit[f"fit/mean_accuracy/{group}"]
    steps = [s for s, _ in loss]
    assert steps == sorted(steps) and steps[0] == 1 and len(steps) > 3
    assert all(w <= m + 1e-6 and 0 <= w <= 1 for (_, w), (_, m) in zip(worst, mean))
    assert steps[-1] <= run.solutions["steps"].max()  # a group's step is its slowest member's
    assert 0 < loss[-1][1] < loss[0][1]  # the fit's loss fell
    curves = _scalars(tmp_path / "tb-curves")
    assert len(curves["analyze/connectivity: bezier curves/loss"]) == 6  # one point a step
    assert all(s == 0 for _, s in curves["analyze/connectivity: bezier curves/held_share"])
    logs = ps.open_run(run).manifest["logs"]
    assert logs == {"fit": str((tmp_path / "tb").resolve()),
                    "analyze": str((tmp_path / "tb-curves").resolve())}


def test_a_log_dir_without_tensorboard_is_one_line(model, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ps.ProtoscopeError, match=r"--log-dir needs TensorBoard: pip install"):
        ps.fit(tmp_path / "run", 3, model=model, log_dir=tmp_path / "tb", **FIT)
    assert not (tmp_path / "run" / "manifest.json").exists()
