"""A small, deterministic run store written without a model, for report tests.

`make_synthetic_run(folder)` writes manifest.json, texts.jsonl, solutions.parquet (with small
random vectors in solutions.safetensors, which RunStore.open validates) and every analysis
table of the table contract (geometry/tables.py, docs/tables.md) with plausible values, in
exactly the contract's columns (written through `conform`, so a hand-made table cannot drift
from what the analyses write): same-text pairs closer
than different-text pairs, linear paths that dip in the middle, Bezier paths that hold. Texts
t1 and t2 are hostile (a <script>, an <img onerror>); the text with id HOSTILE_ID (itself
markup) holds both, so every page built from the run exercises escaping.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from protoscope.analysis.findings import findings
from protoscope.geometry.store.runstore import FORMAT
from protoscope.geometry.tables import COLUMNS, CONCATENATED, VECTORS, conform, reconstructed

SCRIPT_TEXT = "<script>window.__pwned=1</script> a text that must show as text"
IMG_TEXT = '<img src=x onerror="window.__pwned=1"> another text that must show as text'
HOSTILE_ID = "t<b>3</b>"
TEXTS = [  # (text_id, source, context_id, text)
    ("t0", "generated", "c0", "The lighthouse keeper counted the ships that passed at night. "
                              "Each one blinked twice before it vanished behind the cape."),
    ("t1", "generated", "c0", SCRIPT_TEXT),
    ("t2", "generated", "c1", IMG_TEXT),
    (HOSTILE_ID, "random", None, "river quiet number " + SCRIPT_TEXT + " " + IMG_TEXT),
]
ANALYSES = tuple(COLUMNS)  # every table of the contract
D_MODEL = 8
LENGTH = 8  # tokens per text: small grids keep the compare page quick to render
T_GRID = np.linspace(0, 1, 11)
RADII = (0.0, 0.05, 0.1, 0.2, 0.4)


def make_synthetic_run(folder: Path | str, *, seeds: int = 3,
                       analyses: tuple[str, ...] = ANALYSES) -> Path:
    """Write a synthetic run store into `folder` (created); returns its path."""
    root = Path(folder)
    (root / "analysis").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    manifest = _write_manifest(root)
    _write_texts(root, rng)
    solutions = _solutions(rng, seeds)
    # Reports never read the vectors, but RunStore.open checks that every row indexes one.
    save_file({name: rng.normal(size=(len(solutions), D_MODEL)).astype(np.float32)
               for name in ("e", "m")}, str(root / "solutions.safetensors"))
    solutions.to_parquet(root / "solutions.parquet", index=False)
    tables = {k: v for k, v in _analysis_tables(rng, solutions).items() if k in analyses}
    if "findings" in analyses:  # what analyze writes: the findings of the tables present
        tables["findings"] = findings(tables.get, solutions, manifest)
    for name in analyses:
        # conform: the hand-made tables must have exactly the columns the analyses write
        conform(name, tables[name]).to_parquet(root / "analysis" / f"{name}.parquet", index=False)
    return root


def _write_manifest(root: Path) -> dict:
    manifest = {
        "format": FORMAT,
        "model": {"id": "tiny-llama-test", "source": "config", "weights_sha256": "0" * 64,
                  "d_model": D_MODEL},
        "dtype": "float32", "device": "cpu",
        "config": {"recipe": "default", "arrangement": "bos e m*", "length": LENGTH},
        "command": "protoscope fit --texts synthetic",
        "created": "2025-01-01T00:00:00Z", "updated": "2025-01-01T00:10:00Z",
        "status": "complete",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _write_texts(root: Path, rng: np.random.Generator) -> None:
    with (root / "texts.jsonl").open("w", encoding="utf-8") as out:
        for text_id, source, context, text in TEXTS:
            row = {"text_id": text_id, "source": source, "context_id": context, "text": text,
                   "token_ids": rng.integers(0, 1000, LENGTH).tolist(),
                   "token_nll": rng.uniform(0.5, 6, LENGTH).round(3).tolist()}
            out.write(json.dumps(row) + "\n")


def _solutions(rng: np.random.Generator, seeds: int) -> pd.DataFrame:
    rows = []
    for text_id, *_ in TEXTS:
        for seed in range(seeds):
            c_tokens = int(rng.choice([LENGTH, LENGTH, LENGTH - 1]))
            rows.append({
                "solution_id": len(rows), "text_id": text_id, "seed": seed, "length": LENGTH,
                "arrangement": "bos e m*", "share": "none", "share_group": len(rows),
                "e_index": len(rows), "m_index": len(rows), "accuracy": c_tokens / LENGTH,
                "c_tokens": c_tokens, "loss": float(rng.uniform(0.01, 2)),
                "steps": int(rng.integers(100, 2000)), "restarts": 0,
                "seconds": float(rng.uniform(1, 9)), "converged": c_tokens == LENGTH,
                "status": "converged" if c_tokens == LENGTH else "budget", "failure": None,
                "init_from": -1, "recipe": "default", "method": "one-step"})
    return pd.DataFrame(rows)


def _analysis_tables(rng: np.random.Generator, solutions: pd.DataFrame) -> dict:
    context = {t: c for t, _, c, _ in TEXTS}
    source = {t: s for t, s, _, _ in TEXTS}
    pairs = _pairs(solutions)
    tables = {"capacity": _capacity(rng, source),
              "uniqueness": _uniqueness(rng, solutions, context)}
    tables.update(_uniqueness_summaries(tables["uniqueness"]))
    tables.update(_connectivity(rng, pairs))
    tables.update(_neighbourhoods(rng, solutions, source))
    tables.update(_information(rng, solutions, source))
    tables["positions"] = _positions(rng, solutions)
    tables.update(_shape(rng, solutions, source))
    return tables


def _shape(rng, solutions, source) -> dict:
    """Spectra of two solutions, a path per solution, subspace results per text."""
    spectrum, values = [], []
    for sid, text_id in zip(solutions["solution_id"][:2], solutions["text_id"][:2]):
        for block, dim in (("e", D_MODEL), ("e+m", 2 * D_MODEL)):
            eig = np.sort(rng.gamma(1.0, 2.0, 4))[::-1]
            stiff = int((eig > 0.01 * eig[0]).sum())
            spectrum.append({"solution_id": int(sid), "text_id": text_id, "seed": 0,
                             "length": LENGTH, "block": block, "dimension": dim, "k": 4,
                             "top": eig[0], "smallest_found": eig[-1], "threshold": 0.01 * eig[0],
                             "stiff": stiff, "stiff_censored": stiff == 4, "converged": True,
                             "products": 30, "seconds": 0.5})
            values += [{"solution_id": int(sid), "block": block, "rank": r + 1, "eigenvalue": v}
                       for r, v in enumerate(eig)]
    paths, points = [], []
    for sid, text_id, seed in zip(solutions["solution_id"], solutions["text_id"], solutions["seed"]):
        steps = np.arange(0, 60, 10)
        acc = np.minimum(1.0, np.linspace(0, 1.2, len(steps)))
        pc1 = float(rng.uniform(0.5, 0.9))
        paths.append({"solution_id": int(sid), "text_id": text_id, "seed": int(seed),
                      "length": LENGTH, "points": len(steps), "steps": 50, "pc1": pc1,
                      "pc2": (1 - pc1) / 2, "pc12": pc1 + (1 - pc1) / 2, "path_length": 3.0,
                      "displacement": 2.0, "first_exact_step": 40.0, "first_exact_share": 0.8})
        points += [{"solution_id": int(sid), "text_id": text_id, "step": int(st), "accuracy": a,
                    "loss": 5 * (1 - a), "x": float(i), "y": float(rng.normal())}
                   for i, (st, a) in enumerate(zip(steps, acc))]
    dims = [{"text_id": t, "source": source[t], "length": LENGTH, "kind": "random", "dim": k,
             "seeds": 1, "accuracy": min(1.0, k / 16), "reconstructed": k >= 16}
            for t in sorted(source) for k in (4, 16, 64)]
    intrinsic = [{"text_id": t, "source": source[t], "length": LENGTH, "kind": "random",
                  "d_int": 16.0, "found": True, "dims_tried": "4,16,64", "largest_tried": 64,
                  "h_lm_bits": float(rng.uniform(10, 40))} for t in sorted(source)]
    return {"spectrum": pd.DataFrame(spectrum), "spectrum_eigenvalues": pd.DataFrame(values),
            "trajectories": pd.DataFrame(paths), "trajectory_points": pd.DataFrame(points),
            "dimension": pd.DataFrame(dims), "intrinsic_dimension": pd.DataFrame(intrinsic)}


def _capacity(rng, source) -> pd.DataFrame:
    rows = []
    for k, (text_id, src) in enumerate(source.items()):
        for seed in range(2):
            # capacities differ by text and seed; [mem] holds about twice the one-step prefix
            one_step = (8, 11, 16, 22)[(k + seed) % 4]
            for method, limit in (("one-step", one_step), ("mem", 2 * one_step)):
                for length in (4, 5, 8, 11, 16, 22, 32):
                    acc = 1.0 if length <= limit else float(rng.uniform(0.3, 0.9))
                    rows.append({"text_id": text_id, "source": src, "seed": seed,
                                 "method": method, "arrangement": "bos e m*", "length": length,
                                 "accuracy": acc, "c_tokens": int(acc * length),
                                 "reconstructed": bool(reconstructed(acc)), "h_lm_nats": 3.1 * length,
                                 "h_lm_bits": 3.1 * length / np.log(2)})
    return pd.DataFrame(rows)


def _kind(a: str, b: str, context: dict) -> str:
    if a == b:
        return "same_text"
    same = context[a] is not None and context[a] == context[b]
    return "same_context" if same else "different_context"


def _uniqueness(rng, solutions, context) -> pd.DataFrame:
    rows = []
    records = solutions[["solution_id", "text_id"]].to_records(index=False)
    for (sa, ta), (sb, tb) in combinations(records, 2):
        kind = _kind(ta, tb, context)
        base = {"same_text": 0.3, "same_context": 0.7, "different_context": 0.85}[kind]
        for vector in VECTORS:
            cos = float(np.clip(base + rng.normal(0, 0.05), 0, 2))
            rows.append({"solution_a": int(sa), "solution_b": int(sb), "text_a": ta,
                         "text_b": tb, "pair_kind": kind, "vector": vector,
                         "cosine_distance": cos, "l2_distance": cos * 40,
                         "tfidf_distance": 0.0 if ta == tb else float(rng.uniform(0.5, 1)),
                         "semantic_distance": 0.0 if ta == tb else float(rng.uniform(0.2, 0.9)),
                         "weight": 1.0})
    return pd.DataFrame(rows)


def _uniqueness_summaries(pairs: pd.DataFrame) -> dict:
    summary = pd.DataFrame([{"vector": v, "comparison": c, "auc": auc, "p_value": p,
                             "n_a": 12, "n_b": 54, "pairs_a": 12, "pairs_b": 54}
                            for v in VECTORS
                            for c, auc, p in (("same_text<different_text", 0.98, 1e-6),
                                              ("same_context<different_context", 0.61, 0.02))])
    bins = []
    for distance in ("tfidf", "semantic"):
        for low in (0.0, 0.5):
            for kind in ("same_context", "different_context"):
                bins.append({"text_distance": distance, "vector": CONCATENATED,
                             "bin_low": low, "bin_high": low + 0.5,
                             "pair_kind": kind, "n": 10,
                             "median_cosine_distance": 0.7 if kind == "same_context" else 0.85})
    return {"uniqueness_summary": summary, "uniqueness_bins": pd.DataFrame(bins)}


def _pairs(solutions: pd.DataFrame) -> list[tuple[int, int, str, str]]:
    """All same-text pairs, plus two pairs across texts."""
    out = []
    for text_id, group in solutions.groupby("text_id", sort=False):
        out += [(a, b, text_id, text_id) for a, b in combinations(group["solution_id"], 2)]
    firsts = solutions.groupby("text_id", sort=False)["solution_id"].first()
    out += [(int(firsts.iloc[0]), int(firsts.iloc[1]), firsts.index[0], firsts.index[1]),
            (int(firsts.iloc[2]), int(firsts.iloc[3]), firsts.index[2], firsts.index[3])]
    return [(int(a), int(b), ta, tb) for a, b, ta, tb in out]


def _path_accuracy(path: str, t: np.ndarray, depth: float) -> np.ndarray:
    if path == "bezier":
        return np.where((t > 0) & (t < 1), 1 - 0.02 * depth, 1.0)
    return 1 - depth * np.sin(np.pi * t) ** 2


def _connectivity(rng, pairs) -> dict:
    curve, summary, tokens = [], [], []
    for pair_id, (a, b, ta, tb) in enumerate(pairs):
        for path in ("linear", "bezier"):
            acc = _path_accuracy(path, T_GRID, float(rng.uniform(0.4, 0.9)))
            loss = (1 - acc) * 30 + 0.1
            curve += [{"pair_id": pair_id, "solution_a": a, "solution_b": b,
                       "same_text": ta == tb, "path": path, "target": "a", "t": float(t),
                       "accuracy": float(x),
                       "loss": float(l)} for t, x, l in zip(T_GRID, acc, loss)]
            worst = int(np.argmin(acc))
            summary.append({"pair_id": pair_id, "solution_a": a, "solution_b": b,
                            "text_a": ta, "text_b": tb, "same_text": ta == tb, "path": path,
                            "target": "a", "moved": CONCATENATED, "min_accuracy": float(acc.min()),
                            "barrier": float(loss.max() - 0.1),
                            "length_ratio": 1.0 if path == "linear" else float(
                                rng.uniform(1.0, 1.2)),
                            "worst_t": float(T_GRID[worst]),
                            "worst_text": "<script>window.__pwned=1</script> garbled",
                            "held": path == "bezier", "status": "held" if path == "bezier"
                            else "breaks",
                            "train_steps": 0 if path == "linear" else 300,
                            "steps_used": 0 if path == "linear" else 300,
                            "bezier_steps": 300, "samples_per_step": 4, "lr": 0.02,
                            "grid_points": len(T_GRID), "seed": 0, "check_every": 50,
                            "max_pairs": -1, "cross_text_pairs": 2, "midpoint_used": 0,
                            "midpoint_steps": 0, "t_sampling": "uniform", "check_grid": 0})
            for t, x in zip(T_GRID, acc):
                wrong = rng.random(LENGTH) > x
                tokens += [{"pair_id": pair_id, "path": path, "target": "a", "t": float(t),
                            "position": p,
                            "token": "<i>x</i>" if bad else f"w{p}", "correct": not bad}
                           for p, bad in enumerate(wrong)]
    return {"connectivity": pd.DataFrame(curve), "connectivity_pairs": pd.DataFrame(summary),
            "connectivity_tokens": pd.DataFrame(tokens)}


def _neighbourhoods(rng, solutions, source) -> dict:
    sweep, radii, maps = [], [], []
    for sid, text_id in zip(solutions["solution_id"], solutions["text_id"]):
        for direction, scale in (("random", 0.25), ("adversarial", 0.08)):
            for radius in RADII:
                for trial in range(2):
                    acc = float(np.clip(np.exp(-(radius / scale) ** 2) + rng.normal(0, 0.02), 0, 1))
                    sweep.append({"solution_id": sid, "text_id": text_id, "radius": radius,
                                  "direction": direction, "trial": trial, "accuracy": acc,
                                  "loss": (1 - acc) * 30})
        radii.append({"solution_id": sid, "text_id": text_id, "radius_99": 0.05,
                      "radius_50": 0.2, "adversarial_radius_99": 0.01,
                      "nearest_same_text": float(rng.uniform(0.3, 0.6)),
                      "nearest_other_text": float(rng.uniform(0.8, 1.2))})
        k = [t for t, *_ in TEXTS].index(text_id)  # texts sit apart on the map
        centre = np.array([k % 2 * 3.0, k // 2 * 3.0])
        for vector in ("e", "m"):
            for method in ("pca", "umap"):
                x, y = centre + rng.normal(0, 0.3, 2)
                maps.append({"solution_id": sid, "text_id": text_id, "source": source[text_id],
                             "vector": vector, "method": method, "x": x, "y": y})
    purity = pd.DataFrame([{"vector": v, "k": 3, "purity": p, "silhouette": s}
                           for v, p, s in (("e", 0.9, 0.4), ("m", 0.8, 0.3))])
    return {"neighbourhoods": pd.DataFrame(sweep), "neighbourhood_radii": pd.DataFrame(radii),
            "neighbourhood_purity": purity, "maps": pd.DataFrame(maps)}


def _information(rng, solutions, source) -> dict:
    info = pd.DataFrame([{"text_id": t, "source": s, "length": 16, "h_lm_nats": 50.0 + i,
                          "h_lm_bits": (50.0 + i) / np.log(2), "capacity": 16 + 4 * i,
                          "c_tokens": 16, "bits_per_dimension": (50.0 + i) / np.log(2) / 1152,
                          "per_text_dimensions": 1152}
                         for i, (t, s) in enumerate(source.items())])
    probes = pd.DataFrame([{"target": target, "vector": v, "score": acc, "metric": "accuracy",
                            "baseline": chance, "low": acc - 0.1, "high": acc + 0.1, "n": 12,
                            "verdict": "evidence" if acc - 0.1 > chance else "no evidence",
                            "chance": chance, "shuffled": chance - 0.02, "classes": classes,
                            "folds": 5}
                           for target, chance, classes in (("source", 0.5, 2),
                                                           ("context", 0.34, 3))
                           for v, acc in zip(VECTORS, (0.6, 0.8, 0.85))])
    prompting = pd.DataFrame({"solution_id": solutions["solution_id"],
                              "text_id": solutions["text_id"],
                              "continuation": "<img src=x onerror=\"window.__pwned=1\"> the",
                              "token_overlap": rng.uniform(0, 0.2, len(solutions)),
                              "first_token_match": True, "overlap_beyond_first": 0.0,
                              "aligned_from": 1, "prompt": "bos e m"})
    attention = pd.DataFrame([{"layer": layer, "slot": slot, "attention_mass": mass}
                              for layer in range(4)
                              for slot, mass in (("bos", 0.5), ("e", 0.2 + 0.05 * layer),
                                                 ("m", 0.3 - 0.05 * layer))])
    throughput = pd.DataFrame([{"method": m, "length": n, "batch": 1, "tokens": n,
                                "seconds": 1 / tps, "tokens_per_second": tps * n,
                                "accuracy": 1.0, "stand_in": False}
                               for m, tps in (("one-step", 400.0), ("mem", 2.0))
                               for n in (8, 16, 32)])
    return {"information": info, "probes": probes, "prompting": prompting,
            "attention": attention, "throughput": throughput}


def _positions(rng, solutions) -> pd.DataFrame:
    rows = []
    for sid, c_tokens in zip(solutions["solution_id"], solutions["c_tokens"]):
        wrong = set(rng.choice(LENGTH, LENGTH - int(c_tokens), replace=False).tolist())
        rows += [{"solution_id": int(sid), "position": p, "target_token": f"w{p}",
                  "predicted_token": "<b>no</b>" if p in wrong else f"w{p}",
                  "correct": p not in wrong} for p in range(LENGTH)]
    return pd.DataFrame(rows)
