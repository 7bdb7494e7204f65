"""In how few dimensions can a text be reconstructed? Intrinsic dimension by subspace fits.

Reads the solutions a `--subspace K,K,...:KIND` fit stored (geometry/engine/subspace.py: [e; m]
= x0 + P z, z in R^K) and, per text and kind, the smallest K at which some seed reconstructs
the text (accuracy >= 0.99): its intrinsic dimension d_int within this search. It is an upper
bound: a smaller K that did not reconstruct within its budget is not shown impossible, and a
text no K reconstructed has no d_int here (it is counted, not guessed). Beside it the text's
H_LM, so d_int can be read against the information the text holds for the model.
No model runs.

Tables: dimension (per text, kind and K: the best seed's accuracy and whether it reconstructed)
and intrinsic_dimension (per text and kind: d_int, the Ks tried, H_LM).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from protoscope.geometry.store.runstore import subspace_of
from protoscope.geometry.tables import columns, reconstructed
from protoscope.options import takes

from .registry import options_of

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

DIMENSION_COLUMNS = columns("dimension")
INTRINSIC_COLUMNS = columns("intrinsic_dimension")


@takes(options_of("dimension"), "dimension")
def analyze(store, loaded, progress=None) -> dict[str, pd.DataFrame]:
    """Tables dimension and intrinsic_dimension of a run (empty without subspace fits)."""
    rows = store.solutions()
    label = subspace_of(rows)
    rows = rows[label != ""].assign(subspace=label[label != ""])
    if rows.empty:
        return {"dimension": pd.DataFrame(columns=DIMENSION_COLUMNS),
                "intrinsic_dimension": pd.DataFrame(columns=INTRINSIC_COLUMNS)}
    texts = {t.text_id: t for t in store.texts()}
    dimension = best_per_dimension(rows, texts)
    per_text = intrinsic_dimensions(dimension, texts)
    return {"dimension": dimension.reset_index(drop=True),
            "intrinsic_dimension": per_text}


def best_per_dimension(rows: pd.DataFrame, texts: dict) -> pd.DataFrame:
    """Per text, length, kind and K (rows' `subspace` K:KIND): the best seed's accuracy."""
    parts = rows["subspace"].str.split(":", expand=True)
    rows = rows.assign(dim=parts[0].astype(int), kind=parts[1])
    keys = ["text_id", "length", "kind", "dim"]
    best = rows.sort_values("accuracy", ascending=False).groupby(keys, as_index=False).first()
    best = best.merge(rows.groupby(keys).size().rename("seeds").reset_index(), on=keys)
    best["source"] = best["text_id"].map(lambda t: texts[t].source if t in texts else "")
    best["reconstructed"] = reconstructed(best["accuracy"])
    return best[list(DIMENSION_COLUMNS)].sort_values(["text_id", "kind", "dim"])


def intrinsic_dimensions(dimension: pd.DataFrame, texts: dict) -> pd.DataFrame:
    """Per text, length and kind: the smallest K reconstructed (NaN when none), the Ks tried
    and the prefix's H_LM in bits (NaN when the text is not scored that far)."""
    per_text = []
    for (text_id, length, kind), one in dimension.groupby(["text_id", "length", "kind"]):
        ok = one[one["reconstructed"].astype(bool)]
        text = texts.get(text_id)
        scored = text is not None and text.token_nll is not None and \
            len(text.token_nll) >= int(length)
        per_text.append({"text_id": text_id, "source": one["source"].iloc[0],
                         "length": int(length), "kind": kind,
                         "d_int": float(ok["dim"].min()) if len(ok) else np.nan,
                         "found": bool(len(ok)), "dims_tried": ",".join(map(str, sorted(one["dim"]))),
                         "largest_tried": int(one["dim"].max()),
                         "h_lm_bits": text.h_lm(int(length), bits=True) if scored else math.nan})
    return pd.DataFrame(per_text, columns=INTRINSIC_COLUMNS)
