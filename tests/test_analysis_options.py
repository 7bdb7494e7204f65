"""Analysis options: declared once (analysis/registry.py), one `--flag VALUE` each on the command
line, one options dict for the pipeline and the API, bad values as one line with exit status 2."""

import inspect

import pytest

from protoscope.analysis.registry import ANALYSES, CURVE_FAMILIES, T_SAMPLING
from protoscope.cli import build_parser, main
from protoscope.commands import _analysis_options
from protoscope.geometry.engine import paths
from protoscope.geometry.errors import ProtoscopeError
from protoscope.options import ALL, resolve


def test_flags_become_one_options_dict():
    args = build_parser().parse_args(
        ["analyze", "RUN", "--bezier-steps", "300", "--pairs", "all", "--grid", "21",
         "--check-every", "10", "--curve-lr", "0.05", "--directions", "8", "--radii", "0,0.1,1"])
    options = _analysis_options(args, ANALYSES)
    assert options["connectivity"] == {"bezier_steps": 300, "max_pairs": ALL, "grid": 21,
                                       "check_every": 10, "lr": 0.05}
    assert options["neighbourhoods"] == {"directions": 8, "radii": (0.0, 0.1, 1.0)}
    assert "uniqueness" not in options  # nothing given, nothing passed


@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_analysis_takes_exactly_its_declared_options(name):
    analysis = ANALYSES[name]
    params = inspect.signature(analysis.module.analyze.__wrapped__).parameters
    keyword_only = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    assert sorted(keyword_only) == sorted(o.name for o in analysis.options)
    # the defaults live in the declaration alone
    assert all(params[p].default is inspect.Parameter.empty for p in keyword_only), name


def test_the_registry_choices_are_the_engines():
    assert T_SAMPLING == paths.T_SAMPLING and set(CURVE_FAMILIES) == set(paths.CURVES)


def test_resolve_fills_defaults_and_rejects_unknown_options():
    full = resolve(ANALYSES["connectivity"].options, {"bezier_steps": 7}, "connectivity")
    assert full["bezier_steps"] == 7 and full["grid"] == 61 and full["check_every"] == 5
    with pytest.raises(ProtoscopeError, match="no option 'steps'"):
        resolve(ANALYSES["connectivity"].options, {"steps": 7}, "connectivity")
    with pytest.raises(ProtoscopeError, match="grid"):
        resolve(ANALYSES["connectivity"].options, {"grid": 1}, "connectivity")


@pytest.mark.parametrize("flag,value", [("--grid", "0"), ("--bezier-steps", "-1"),
                                        ("--curve-lr", "0"), ("--radii", "a,b"), ("--pairs", "0")])
def test_a_bad_budget_is_one_line_and_status_2(flag, value, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_every_analysis_has_a_code_version_for_its_stamp():
    for analysis in ANALYSES.values():
        assert isinstance(analysis.version, int) and analysis.version >= 1, analysis.name


def test_options_lists_every_step_with_its_declared_defaults(capsys):
    assert main(["options", "fit"]) == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and "--no-warm-start" not in out
    assert main(["options", "analyze"]) == 0
    out = capsys.readouterr().out
    assert "[connectivity]" in out and "--bezier-steps" in out and "(API only)" in out
    assert main(["options", "demo"]) == 0
    out = capsys.readouterr().out
    assert "1 (declared all)" in out  # the demo's override of max_pairs, beside analyze's
    assert main(["options", "nothing"]) == 2
