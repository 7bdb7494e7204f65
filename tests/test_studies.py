"""The studies end to end on a tiny model: each fits what its protocol needs (sharing as the
paper does), runs its analyses, writes its report and records its protocol; bad options are
one line and exit status 2."""

import pytest

from protoscope.workflows import studies
from protoscope.cli import main
from protoscope.geometry.models.loading import tiny_model

WORDS = ("the cat sat on the mat and then we all went to the city at night with the old dog "
         "while the rain kept falling on the roofs of the small houses by the river")


@pytest.fixture(scope="module")
def loaded():
    return tiny_model("llama", seed=0, initializer_range=0.3)


def _study(name, tmp_path, loaded, out, options=None, **values):
    """The study `name` on the tiny model, into tmp_path/out."""
    values = {"model": "tiny-llama", "max_steps": 80, "quiet": True, "generate_tokens": 12, **values}
    return studies.run(name, str(tmp_path / out), options=options, loaded=loaded, **values)


def _protocol_ok(store, name):
    protocol = store.manifest["protocol"]
    assert protocol["name"] == name
    assert set(protocol) == {"name", "settings", "paper", "differs"}
    assert protocol["settings"]["model"] == "tiny-llama"
    assert protocol["settings"]["share_policy"] == "release"
    # the model always differs from the paper's, and each difference is one sentence
    assert any(s.startswith("model: tiny-llama here") for s in protocol["differs"])
    assert all(s.endswith(".") and "\n" not in s for s in protocol["differs"])
    assert (store.path / "report.html").is_file()
    return protocol


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "texts.txt"
    words = WORDS.split()
    path.write_text("\n\n".join(" ".join(words[i:] + words[:i]) for i in range(0, 9, 3)))
    return str(path)


def test_connectivity_study_shares_m_by_a_texts_seeds_and_walks_e(tmp_path, loaded, text_file):
    result = _study("connectivity", tmp_path, loaded, "conn", texts=text_file, length=4, seeds=3,
                    options={"connectivity": dict(max_pairs=1, bezier_steps=4, samples_per_step=2,
                                                  grid=5, cross_text_pairs=1)})
    rows = result.store.solutions()
    assert len(rows) == 9 and (rows["share"] == "m").all()
    per_text = rows.groupby("text_id")["m_index"].nunique()
    assert (per_text == 1).all() and rows["m_index"].nunique() == 3  # one m per text
    pairs = result.store.analysis("connectivity_pairs")
    same = pairs[pairs["same_text"].astype(bool)]
    assert set(same["path"]) == {"linear", "bezier"} and (same["moved"] == "e").all()
    protocol = _protocol_ok(result.store, "connectivity")
    assert protocol["settings"]["pairs"] == 1 and protocol["paper"]["pairs"] == 45
    assert any(s.startswith("solutions per text: 3 here, 10 in the paper") for s in protocol["differs"])
    assert set(result.summary["path"]) == {"linear", "bezier"}
    assert result.summary["held_share"].between(0, 1).all()


def test_uniqueness_study_is_the_papers_seed_protocol_with_one_m(tmp_path, loaded):
    result = _study("uniqueness", tmp_path, loaded, "uniq", contexts=2, per_context=2, seeds=2,
                    length=4)
    rows = result.store.solutions()
    seeds = rows.groupby("text_id")["seed"].count().to_dict()
    assert seeds == {"gen-c00-k00": 2, "gen-c00-k01": 1, "gen-c01-k00": 2, "gen-c01-k01": 1}
    assert rows["m_index"].nunique() == 1  # every text and seed shares one m
    pairs = result.store.analysis("uniqueness")
    assert set(pairs["vector"]) == {"e"}
    assert set(pairs["pair_kind"]) == {"same_text", "same_context", "different_context"}
    _protocol_ok(result.store, "uniqueness")
    summary = result.summary
    assert {"estimate", "low", "high", "verdict"} <= set(summary.columns)
    # 4 texts: fewer than the 5 a bootstrap over texts needs, so no interval at this n
    assert summary["low"].isna().all() and summary["high"].isna().all()


def test_probes_study_mixes_share_groups_and_probes_e(tmp_path, loaded):
    result = _study("probes", tmp_path, loaded, "probes", text_seed=3,
                    texts="random:8+windows:8", length=4, seeds=1, group_size=4)
    rows = result.store.solutions()
    assert len(rows) == 16 and rows["m_index"].nunique() == 4
    # groups are drawn at random: no group holds only one source's texts
    texts = {t.text_id: t.source for t in result.store.texts()}
    sources = rows.assign(source=rows["text_id"].map(texts)).groupby("share_group")["source"]
    assert (sources.nunique() > 1).any()
    table = result.store.analysis("probes")
    assert len(table) and set(table["vector"]) == {"e"}  # m is shared: not probed
    assert set(table["verdict"]) <= {"evidence", "no evidence"}
    _protocol_ok(result.store, "probes")


def test_capacity_study_with_m_shared(tmp_path, loaded, text_file):
    result = _study("capacity", tmp_path, loaded, "cap", texts=text_file, lengths=(2, 4), seeds=1,
                    share="m")
    table = result.store.analysis("capacity")
    assert set(table["length"]) <= {2, 4} and len(table)
    assert (result.store.solutions()["share"] == "m").all()
    protocol = _protocol_ok(result.store, "capacity")
    assert protocol["settings"]["share"].startswith("m shared")
    assert "capacity" in result.summary.columns
    # the study ends with its answer: a capacity row, a lower bound that names its grid
    row = result.store.analysis("findings").set_index("finding").loc["capacity (tokens, median over texts)"]
    assert row["evidence"] == "bounded search" and row["verdict"] != "disagrees"
    at_top = int((result.summary.query("method == 'one-step'")["capacity"] >= 4).sum())
    assert (f"{at_top} of" in row["detail"] and "grid's longest length 4" in row["detail"]) if at_top \
        else "grid's longest" not in row["detail"]


def test_a_study_run_again_resumes_without_refitting(tmp_path, loaded):
    first = _study("probes", tmp_path, loaded, "again", texts="random:8", length=3, seeds=1,
                   group_size=2)
    before = first.store.solutions()
    again = _study("probes", tmp_path, loaded, "again", texts="random:8", length=3, seeds=1,
                   group_size=2)
    assert again.store.solutions().equals(before)


def test_differences_name_each_setting_once():
    out = studies.differences({"model": "a", "seeds": 10, "length": 16},
                              {"model": "b", "seeds": 10, "length": None})
    assert out == ["model: a here, b in the paper.",
                   "tokens per text: 16 here; the paper does not state it."]


@pytest.mark.parametrize("argv, message", [
    (["study", "connectivity", "--seeds", "1"], "argument --seeds: must be an integer >= 2"),
    (["study", "connectivity", "--grid", "1"], "argument --grid: must be an integer >= 2"),
    (["study", "connectivity", "--pairs", "0"], "argument --pairs: must be an integer >= 1 or all"),
    (["study", "probes", "--group-size", "0"], "argument --group-size: must be an integer >= 1"),
    (["study", "uniqueness", "--contexts", "0"], "argument --contexts: must be an integer >= 1"),
    (["study", "capacity", "--texts", "random:2", "--lengths", "4,2"], "--lengths must be increasing"),
    (["study", "capacity", "--texts", "random:2", "--lengths", "4", "--share", "e"],
     "argument --share: must be one of none, m"),
    (["study", "probes", "--max-steps", "0"], "argument --max-steps: must be an integer >= 1"),
    (["study", "nothing"], "invalid choice"),
    (["experiment", "uniqueness", "--contexts", "2"], "protoscope study uniqueness"),
])
def test_bad_study_options_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert main(argv + (["--out", str(tmp_path / "r")] if argv[0] == "study" and argv[1] != "nothing" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "manifest.json").exists()


@pytest.mark.parametrize("study", studies.STUDIES)
def test_each_study_has_a_plan_a_summary_and_one_default_per_option(study):
    """A study's declaration (workflows/protocols.py) is the only statement of its defaults:
    the command line leaves every flag unset (so `given` passes only what was typed) and
    its help shows the declared default."""
    from protoscope.cli import build_parser

    assert study in studies.PLANS and study in studies.SUMMARIES
    argv = ["demo"] if study == "demo" else ["study", study, "--out", "x"]
    args = vars(build_parser().parse_args(argv))
    spec = studies.STUDIES[study]
    for option in spec.every_option:
        if option.cli:
            assert args[option.name] is None, option.name
    for analysis in spec.overrides:
        assert analysis in spec.analyses and set(spec.overrides[analysis]) <= {
            o.name for o in studies.ANALYSES[analysis].options}


def test_a_study_too_small_for_an_interval_says_so_before_it_fits(tmp_path, loaded, capsys):
    _study("connectivity", tmp_path, loaded, "small", texts="builtin:2", length=4, seeds=2,
           options={"connectivity": {"bezier_steps": 2, "grid": 3}})
    err = capsys.readouterr().err
    assert err.count("need at least 5 for an interval") == 1
    assert "study connectivity: 2 texts with pairs" in err


def test_unknown_study_options_are_one_line(tmp_path, loaded):
    from protoscope.geometry.errors import ProtoscopeError

    with pytest.raises(ProtoscopeError, match="no option 'pairs'"):
        _study("connectivity", tmp_path, loaded, "x", pairs=1)
    with pytest.raises(ProtoscopeError, match="runs no analysis 'probes'"):
        _study("connectivity", tmp_path, loaded, "x", options={"probes": {}})
    assert not (tmp_path / "x" / "manifest.json").exists()
