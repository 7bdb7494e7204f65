"""The table contract: its rules, docs/tables.md, and the analyses -> report path end to end."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
import pytest

from protoscope.geometry import tables
from protoscope.geometry.tables import COLUMNS, CONCATENATED, capacity_of, conform, own_vectors

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def _documented_columns() -> dict[str, list[str]]:
    """Per bullet `name.parquet` of the doc's analysis tables: the backticked names outside
    parentheses (inside them are values and notes). Other files (curves.safetensors) skipped."""
    section = DOC.read_text(encoding="utf-8").split("## Analysis tables", 1)[1]
    out = {}
    for bullet in re.split(r"\n- ", section)[1:]:
        head, _, body = bullet.partition(":")
        name = head.strip().strip("`")
        if not name.endswith(".parquet"):
            continue
        name = name.removesuffix(".parquet")
        depth, names = 0, []
        for part in re.split(r"(`[^`]*`)", body):
            if part.startswith("`") and part.endswith("`") and len(part) > 1:
                if depth == 0:
                    names.append(part[1:-1])
                continue
            depth += part.count("(") - part.count(")")
        out[name] = names
    return out


def test_docs_list_exactly_the_contract_columns():
    documented = _documented_columns()
    assert sorted(documented) == sorted(COLUMNS)
    for name, columns in COLUMNS.items():
        assert sorted(documented[name]) == sorted(columns), name
        assert len(set(documented[name])) == len(documented[name]), name


def test_conform_orders_and_refuses_missing_or_unknown_columns():
    frame = pd.DataFrame({c: [0] for c in reversed(COLUMNS["attention"])})
    assert list(conform("attention", frame).columns) == list(COLUMNS["attention"])
    with pytest.raises(ValueError, match="lacks column 'attention_mass'"):
        conform("attention", frame.drop(columns="attention_mass"))
    with pytest.raises(ValueError, match="unknown column 'mass'"):
        conform("attention", frame.assign(mass=1.0))
    with pytest.raises(ValueError, match="unknown analysis table"):
        conform("attentions", frame)
    with pytest.raises(ValueError, match="no column 'mass'"):
        tables.read("attention", "layer", "mass")


def test_reconstructed_is_the_papers_threshold():
    assert tables.RECONSTRUCTED == 0.99
    assert tables.reconstructed(0.99) and not tables.reconstructed(0.989)
    assert tables.reconstructed(np.array([1.0, 0.5])).tolist() == [True, False]


def test_capacity_is_the_longest_reconstructed_prefix():
    # t0 holds 4 and 8 but not 5 (a gap does not end capacity); t1 holds nothing.
    table = pd.DataFrame({"text_id": ["t0"] * 4 + ["t1"] * 2,
                          "length": [4, 5, 8, 11, 4, 5],
                          "accuracy": [1.0, 0.8, 0.995, 0.5, 0.9, 0.2]})
    got = capacity_of(table, ["text_id"]).set_index("text_id")["capacity"].to_dict()
    assert got == {"t0": 8, "t1": 0}
    # the capacity table's own `reconstructed` column is what counts where it exists
    marked = table.assign(reconstructed=[True, True, False, False, False, False])
    assert capacity_of(marked, ["text_id"])["capacity"].tolist() == [5, 0]


def test_a_shared_vector_is_no_solutions_own():
    rows = pd.DataFrame({"arrangement": ["bos e m*", "bos e m*", "bos e m*", "e*", "bos mem"],
                         "share": ["none", "m", "e", "none", "none"]})
    own = own_vectors(rows)
    assert set(own) == set(tables.VECTORS) and CONCATENATED == "e+m"
    assert own["e"].tolist() == [True, True, False, True, True]  # [mem] trains its vector as e
    assert own["m"].tolist() == [True, False, True, False, False]
    assert own[CONCATENATED].tolist() == [True, False, False, False, False]
