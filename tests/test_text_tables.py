"""Texts from where researchers keep them: a column of a parquet or CSV file, a local Hugging
Face dataset, or the texts a Python caller holds (list, Series, DataFrame, dataset column).
Each gives (text_id, context_id, text) records with the file sources' checks, and bad input
ends in one line naming what is wrong."""

import pandas as pd
import pytest

from protoscope.cli import main
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.runs.fit import check_text_spec
from protoscope.geometry.store.texts import (load_texts, parse_text_spec, read_table_texts,
                                             records_of, texts_label)

FRAME = pd.DataFrame({"text": ["the first text here", "a second one", "and a third"],
                      "body": ["other a", "other b", "other c"],
                      "key": ["k1", "k2", "k3"], "context_id": ["c0", "c0", None]})


@pytest.fixture
def tables(tmp_path):
    FRAME.to_parquet(tmp_path / "t.parquet")
    FRAME.to_csv(tmp_path / "t.csv", index=False)
    return tmp_path


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_table_column_gives_texts_ids_and_contexts(tables, kind):
    path = tables / f"t.{kind}"
    assert read_table_texts(kind, path) == [("file-000", "c0", "the first text here"),
                                           ("file-001", "c0", "a second one"),
                                           ("file-002", None, "and a third")]
    source, params = parse_text_spec(f"{kind}:{path}:body,key")
    assert source == kind and params["column"] == "body" and params["id_column"] == "key"
    records = read_table_texts(source, **params)
    assert [r[0] for r in records] == ["k1", "k2", "k3"] and records[2][2] == "other c"


def test_table_texts_are_tokenised_like_any_source(tables, tiny_llama):
    texts = load_texts(f"csv:{tables / 't.csv'}:text,key", tiny_llama, with_nll=False)
    assert [t.text_id for t in texts] == ["k1", "k2", "k3"]
    assert all(t.source == "file" and t.n_tokens > 0 for t in texts)


def _bad(tmp_path):
    (tmp_path / "empty.csv").write_text("text,key\nfine,a\n,b\n")
    (tmp_path / "dupes.csv").write_text("text,key\nx,a\ny,a\n")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    return {
        f"csv:{tmp_path / 'missing.csv'}": "csv file",
        f"parquet:{tmp_path / 'missing.parquet'}": "does not exist",
        f"csv:{tmp_path / 'empty.csv'}": "text 1 is empty",
        f"csv:{tmp_path / 'dupes.csv'}:text,key": "duplicate text id 'a'",
        f"csv:{tmp_path / 'dupes.csv'}:body": "no column 'body'; its columns: text, key",
        f"csv:{tmp_path / 'dupes.csv'}:text,nokey": "no id column 'nokey'",
        f"parquet:{tmp_path / 'junk.parquet'}": "is not a parquet file",
        "csv:": "use csv:FILE[:COLUMN[,ID_COLUMN]]",
        f"hf:{tmp_path / 'nowhere'}": "dataset folder",
    }


def test_bad_table_specs_give_one_line_before_any_model(tmp_path):
    for spec, says in _bad(tmp_path).items():
        with pytest.raises(ProtoscopeError) as err:
            check_text_spec(spec)
        assert says in str(err.value) and "\n" not in str(err.value), spec


def test_the_command_line_says_a_bad_table_in_one_line(tmp_path, capsys):
    code = main(["fit", "--texts", f"csv:{tmp_path / 'missing.csv'}", "--length", "4",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing.csv" in err
    assert not (tmp_path / "run").exists()


def test_texts_a_caller_holds_become_records():
    assert records_of(["a b", "c d"]) == [("file-000", None, "a b"), ("file-001", None, "c d")]
    series = pd.Series(["x y", "z w"], index=["first", "second"])
    assert [r[0] for r in records_of(series)] == ["first", "second"]
    assert [r[0] for r in records_of(pd.Series(["x", "y"]))] == ["file-000", "file-001"]
    assert records_of(FRAME, id_column="key")[0] == ("k1", "c0", "the first text here")
    for bad, says in [("a string", "give a text spec, or a list"), ([], "holds no texts"),
                      (["ok", 3], "text 1 is int"), (["ok", " "], "text 1 is empty"),
                      (pd.Series(["a", "b"], index=["i", "i"]), "duplicate text id 'i'")]:
        with pytest.raises(ProtoscopeError, match=says):
            records_of(bad)


def test_given_texts_are_labelled_by_content():
    a, b = records_of(["one", "two"]), records_of(["one", "three"])
    assert texts_label(a).startswith("given:2:") and texts_label(a) != texts_label(b)
    assert texts_label(a) == texts_label(records_of(["one", "two"]))


def test_a_local_dataset_by_split_and_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_pandas(FRAME[["text", "key"]])
    test = datasets.Dataset.from_dict({"text": ["held out"], "key": ["h1"]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "dd")
    train.save_to_disk(tmp_path / "one")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.md").write_text("no data here")
    assert read_table_texts("hf", tmp_path / "one")[1] == ("file-001", None, "a second one")
    assert read_table_texts("hf", tmp_path / "dd", "test", "text", "key") == [("h1", None, "held out")]
    for spec, says in [(f"hf:{tmp_path / 'dd'}", "holds splits train, test; name one"),
                       (f"hf:{tmp_path / 'dd'}:valid", "no split 'valid'"),
                       (f"hf:{tmp_path / 'plain'}", "is not a local dataset")]:
        with pytest.raises(ProtoscopeError, match=says):
            check_text_spec(spec)
    # a dataset's own data files (as a hub snapshot lays them out), read locally
    (tmp_path / "files").mkdir()
    FRAME[["text"]].to_parquet(tmp_path / "files" / "train-00000-of-00001.parquet")
    assert len(read_table_texts("hf", tmp_path / "files")) == 3
    # a dataset column given to the API
    assert records_of(train["text"])[0] == ("file-000", None, "the first text here")
    assert records_of(train, id_column="key")[2][0] == "k3"
