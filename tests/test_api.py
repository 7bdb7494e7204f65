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
