"""Analysis budgets on the command line: one `--flag VALUE` form, one options dict for
run_analyses, bad values as one line with exit status 2."""

import pytest

from protoscope.analysis import connectivity
from protoscope.analysis.options import OPTIONS, from_args, resolve
from protoscope.cli import build_parser, main
from protoscope.geometry.errors import ProtoscopeError


def test_flags_become_one_options_dict():
    args = build_parser().parse_args(
        ["analyze", "RUN", "--bezier-steps", "300", "--pairs", "0", "--grid", "21",
         "--check-every", "10", "--curve-lr", "0.05", "--directions", "8", "--radii", "0,0.1,1"])
    options = from_args(args)
    assert options["connectivity"] == {"bezier_steps": 300, "max_pairs": None, "grid": 21,
                                       "check_every": 10, "lr": 0.05}
    assert options["neighbourhoods"] == {"directions": 8, "radii": (0.0, 0.1, 1.0)}
    assert "uniqueness" not in options  # nothing given, nothing passed


def test_every_flag_names_a_real_keyword():
    import importlib

    for option in OPTIONS:
        module = importlib.import_module(f"protoscope.analysis.{option.analysis}")
        assert option.keyword in resolve(module.analyze, {}, option.analysis), option.flag


def test_resolve_fills_defaults_and_rejects_unknown_options():
    full = resolve(connectivity.analyze, {"bezier_steps": 7}, "connectivity")
    assert full["bezier_steps"] == 7 and full["grid"] == 61 and full["check_every"] == 5
    with pytest.raises(ProtoscopeError, match="no option 'steps'"):
        resolve(connectivity.analyze, {"steps": 7}, "connectivity")


@pytest.mark.parametrize("flag,value", [("--grid", "0"), ("--bezier-steps", "-1"),
                                        ("--curve-lr", "0"), ("--radii", "a,b")])
def test_a_bad_budget_is_one_line_and_status_2(flag, value, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_every_analysis_has_a_code_version_for_its_stamp():
    import importlib

    from protoscope.analysis.run import ANALYSES

    for name in ANALYSES:
        version = importlib.import_module(f"protoscope.analysis.{name}").VERSION
        assert isinstance(version, int) and version >= 1, name
