"""The command line contract: every command has --help, fit writes a store and resumes it."""
import pytest
import torch

from protoscope.cli import build_parser, main
from protoscope.geometry.models.loading import tiny_model
from protoscope.geometry.store.runstore import RunStore

COMMANDS = ["fit", "capacity", "study", "analyze", "report", "compare", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: protoscope " + command in capsys.readouterr().out


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    loaded = tiny_model("llama", seed=0, initializer_range=0.3)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_fit_then_rerun_resumes_without_refitting(model_folder, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("the cat sat on the mat\n\nwe went to the city at night\n")
    args = ["fit", "--model", str(model_folder), "--texts", str(texts), "--length", "4",
            "--seeds", "2", "--out", str(tmp_path / "run"), "--max-steps", "150", "--lr", "0.05", "--quiet"]
    assert main(args) == 0
    first = RunStore.open(tmp_path / "run").solutions()
    assert len(first) == 4 and first["converged"].sum() >= 2
    assert "4 solutions" in capsys.readouterr().out
    assert main(args) == 0  # same command again: resumes, nothing left to fit
    again = RunStore.open(tmp_path / "run").solutions()
    assert again.equals(first)
    assert RunStore.open(tmp_path / "run").manifest["status"] == "complete"


def test_capacity_climbs_until_two_failures(model_folder, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("the cat sat on the mat and we went to the city at night with all of them\n")
    args = ["capacity", "--model", str(model_folder), "--texts", str(texts), "--lengths", "2,4,32,48,64",
            "--seeds", "1", "--out", str(tmp_path / "cap"), "--max-steps", "40", "--lr", "0.05", "--quiet"]
    assert main(args) == 0
    table = RunStore.open(tmp_path / "cap").analysis("capacity")
    assert list(table["length"])[:2] == [2, 4] and table["reconstructed"].iloc[0]
    assert 64 not in set(table["length"])  # too long for the text, or climbing stopped
    assert "capacity" in capsys.readouterr().out


def test_protocol_seeds_first_of_context():
    from protoscope.geometry.runs.fit import protocol_seeds
    from protoscope.geometry.store.texts import Text

    texts = [Text(i, "generated", c, "x", (1,)) for i, c in
             [("a", "c0"), ("b", "c0"), ("c", "c1"), ("d", "c0")]] + [Text("e", "file", None, "x", (1,))]
    assert protocol_seeds(texts, 10) == {"a": 10, "b": 1, "c": 10, "d": 1, "e": 10}


def test_threads_are_applied_and_kept_in_the_manifest(model_folder, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("the cat sat on the mat\n")
    out = tmp_path / "run"
    args = ["fit", "--model", str(model_folder), "--texts", str(texts), "--length", "2",
            "--seeds", "1", "--out", str(out), "--max-steps", "20", "--quiet", "--threads", "1"]
    torch.set_num_threads(2)
    try:
        assert main(args) == 0
        assert torch.get_num_threads() == 1
        assert main(["analyze", str(out), "--only", "uniqueness", "--threads", "1", "--quiet"]) == 0
    finally:
        torch.set_num_threads(1)
    assert RunStore.open(out).manifest["threads"] == {"fit": 1, "analyze": 1}


@pytest.mark.parametrize("command", ["fit", "capacity", "study connectivity", "study uniqueness",
                                     "study probes", "study capacity", "analyze", "demo"])
def test_every_model_command_takes_threads(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(command.split() + ["--help"])
    assert "--threads" in capsys.readouterr().out


def test_threads_below_one_get_one_line(model_folder, tmp_path, capsys):
    args = ["fit", "--model", str(model_folder), "--texts", "builtin", "--length", "2",
            "--out", str(tmp_path / "run"), "--threads", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("protoscope: error: protoscope fit: argument --threads: must be an "
                           "integer >= 1, got '0' (see --help)")
    assert not (tmp_path / "run").exists()


def test_preparing_texts_shows_progress_on_stderr(model_folder, tmp_path, capfd):
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(f'{{"id": "t{i}", "text": "the cat {i} sat on the mat"}}\n'
                             for i in range(30)))
    args = ["fit", "--model", str(model_folder), "--texts", str(texts), "--length", "2",
            "--seeds", "1", "--out", str(tmp_path / "run"), "--max-steps", "1"]
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "texts tokenised" in err and "30/30" in err
    assert "texts scored" in err  # after the fit: the first step never waits for H_LM
    assert err.index("texts tokenised") < err.index("fit:") < err.index("texts scored")
