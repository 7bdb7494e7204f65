"""What path did the optimiser take to a solution, and how flat is it?

Reads the paths `fit --trajectory-every K` keeps (RUN/trajectories: the vectors [e; m] every K
steps, each with the accuracy and loss it had, and last the solution's kept vectors). Per
solution, over the segment of its last restart (the search that found it): a PCA of the path's
points (scikit-learn) and the share of their variance in the first components (progressive
cramming reports 65.7% in the first two for autoregressive memory vectors), the path's length
against the straight line from its start to its end, and where along it the text first
appears (the first kept point at accuracy >= 0.99, as a step and a share of the steps). For
the compare page, every solution of a text is also placed in one PCA plane fitted to all its
paths' points, so its seeds' paths can be drawn together. No model runs: the accuracy of
each point is the one the fit measured there.

Tables: trajectories (one row per solution with a path) and trajectory_points (each point's
step, accuracy, loss and coordinates in its text's common plane).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from protoscope.geometry.engine.fitting import PATH_FIELDS
from protoscope.geometry.tables import RECONSTRUCTED, columns
from protoscope.options import takes

from .progress import reporter
from .registry import options_of

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

PATH_COLUMNS = columns("trajectories")
POINT_COLUMNS = columns("trajectory_points")
_STEP, _RESTART, _ACCURACY, _LOSS = range(len(PATH_FIELDS))


def last_segment(path: np.ndarray) -> np.ndarray:
    """The rows of the path's last restart: the search that ended at the solution."""
    return path[path[:, _RESTART] == path[-1, _RESTART]]


def describe_path(points: np.ndarray, accuracy: np.ndarray, steps: np.ndarray) -> dict:
    """PCA shares, length, displacement and the first exact point of one path [T, D]."""
    n = min(3, len(points) - 1, points.shape[1])
    shares = PCA(n_components=n).fit(points).explained_variance_ratio_ if n >= 1 else []
    shares = list(shares) + [np.nan] * (2 - len(shares))
    length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    exact = np.nonzero(accuracy >= RECONSTRUCTED)[0]
    first = float(steps[exact[0]]) if len(exact) else np.nan
    total = float(steps[-1] - steps[0])
    return {"pc1": float(shares[0]), "pc2": float(shares[1]),
            "pc12": float(shares[0] + shares[1]) if np.isfinite(shares[1]) else float(shares[0]),
            "path_length": length, "displacement": float(np.linalg.norm(points[-1] - points[0])),
            "first_exact_step": first,
            "first_exact_share": (first - steps[0]) / total if len(exact) and total > 0 else np.nan}


@takes(options_of("trajectories"), "trajectories")
def analyze(store, loaded, progress=None, *, min_points: int) -> dict[str, pd.DataFrame]:
    """Tables trajectories and trajectory_points of a run (empty when it kept no paths)."""
    report = reporter(progress)
    paths = store.trajectories()
    rows = store.solutions().set_index("solution_id")
    rows = rows[rows.index.isin(list(paths))]
    summary, points = [], []
    by_text: dict[str, list] = {}
    report("paths", 0, len(rows))
    for done, (sid, row) in enumerate(rows.iterrows(), 1):
        segment = last_segment(paths[sid].double().numpy())
        report("paths", done, len(rows))
        if len(segment) < min_points:
            continue
        x, steps = segment[:, len(PATH_FIELDS):], segment[:, _STEP]
        summary.append({"solution_id": int(sid), "text_id": row["text_id"], "seed": int(row["seed"]),
                        "length": int(row["length"]), "points": len(segment),
                        "steps": int(steps[-1]),
                        **describe_path(x, segment[:, _ACCURACY], steps)})
        by_text.setdefault(row["text_id"], []).append((int(sid), segment))
    for text_id, members in by_text.items():  # one plane per text: its seeds' paths together
        stacked = np.concatenate([seg[:, len(PATH_FIELDS):] for _, seg in members])
        plane = PCA(n_components=min(2, len(stacked) - 1, stacked.shape[1])).fit(stacked)
        for sid, seg in members:
            xy = plane.transform(seg[:, len(PATH_FIELDS):])
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
            points.append(pd.DataFrame({
                "solution_id": sid, "text_id": text_id, "step": seg[:, _STEP].astype(int),
                "accuracy": seg[:, _ACCURACY], "loss": seg[:, _LOSS], "x": xy[:, 0], "y": xy[:, 1]}))
    return {"trajectories": pd.DataFrame(summary, columns=PATH_COLUMNS),
            "trajectory_points": (pd.concat(points, ignore_index=True)[list(POINT_COLUMNS)]
                                  if points else pd.DataFrame(columns=POINT_COLUMNS))}
