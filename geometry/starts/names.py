"""Where did each solution's search begin? The `start` of a solution, and which starts are learned.

A start decides what the geometry analyses can see: from random starts a text's solutions from
different seeds end far apart (median cosine distance 0.98 in e on the default model), from a
learned encoder's prediction close together (0.16), so the uniqueness, connectivity and probe
findings of a run whose solutions started from an encoder measure the encoder as much as the
solution space (analysis/findings.py makes them inconclusive unless the user allows it).

The values of solutions.parquet's `start` column (docs/tables.md):
- `normal`, `embedding`: the recipe's own random init (recipes.py `init`); a length curriculum's
  stages are part of the recipe, so its solutions carry the recipe's init too;
- `warm`: the vectors of a shorter prefix's solution (the capacity search's warm start;
  `init_from` names that solution);
- `encoder:NAME`: an encoder's prediction (`fit --init encoder[:ENC]`; NAME is the encoder's
  file name without suffix, the shipped one's included). Only restart 0 starts there: a restart
  after a stall draws the recipe's init (the `restarts` column counts them);
- `unknown`: a row of a run that recorded neither the column nor enough config to tell.
Under `--m-from` m is the file's frozen m and the start names where e began.

Rows written before the column existed (or by a store that does not keep it) are read from the
run's manifest: its config's `start` (an encoder), `init_from` (warm) and the recipe's init.
"""

from __future__ import annotations

import pathlib

import pandas as pd

LEARNED = "encoder"  # the prefix of every learned start
UNKNOWN = "unknown"


def encoder_start(name) -> str:
    """The `start` value of an encoder's prediction: `encoder:NAME` (NAME from a path or spec)."""
    name = str(name or "")
    if name.partition(":")[0] == LEARNED:  # a spec: `encoder` (shipped) or `encoder:PATH`
        name = name.partition(":")[2] or "shipped"
    path = pathlib.Path(name)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return f"{LEARNED}:{stem.name or 'shipped'}"


def start_of(init_from: int, recipe_init: str, encoder: str = "") -> str:
    """One solution's start: an encoder's (when the run used one), warm, or the recipe's init."""
    if encoder:
        return encoder_start(encoder)
    if init_from is not None and int(init_from) >= 0:
        return "warm"
    return str(recipe_init or UNKNOWN)


def solution_starts(rows: pd.DataFrame, manifest: dict | None) -> pd.Series:
    """Each row's start: its `start` column where it has one, else read from the manifest."""
    manifest = manifest or {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    recipe = config.get("recipe")
    recipe_init = recipe.get("init") if isinstance(recipe, dict) else None
    spec = str(config.get("start") or "")
    encoder = ""
    if spec.partition(":")[0] == LEARNED:
        recorded = manifest.get("start") if isinstance(manifest.get("start"), dict) else {}
        encoder = recorded.get("encoder") or spec
    init_from = rows["init_from"] if "init_from" in rows.columns else pd.Series(-1, index=rows.index)
    derived = pd.Series([start_of(-1 if pd.isna(i) else int(i), recipe_init, encoder)
                         for i in init_from], index=rows.index, dtype=object)
    if "start" not in rows.columns:
        return derived
    given = rows["start"].astype(object)
    return given.where(given.notna() & (given.astype(str) != ""), derived)


def learned(starts: pd.Series) -> pd.Series:
    """Which starts are a learned encoder's prediction."""
    return starts.fillna("").astype(str).str.startswith(f"{LEARNED}:")
