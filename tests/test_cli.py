"""The command line contract: every command has --help, fit writes a store and resumes it."""
import pytest

from protoscope.cli import build_parser, main
from protoscope.geometry.models import tiny_model
from protoscope.geometry.store import RunStore

COMMANDS = ["fit", "capacity", "analyze", "report", "compare", "demo"]


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
