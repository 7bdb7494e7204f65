"""Can a text's proto-tokens be predicted instead of searched for? An encoder into their space.

The paper closes on solutions forming local, connected regions, which "suggests the potential
of learning a dedicated encoder into that space". An encoder here maps a text to a start
(e, m) for the fitting loop, learned from a run's solutions:

- features: the frozen model's own hidden states of the text (`[BOS] t_1..t_N` run normally,
  last layer), the mean over the text's positions joined with the last position's state; one
  batched forward pass, no gradient;
- `nearest`: the solution of the training text whose features are most similar (cosine after
  standardising), e and m as they were;
- `ridge`: scikit-learn's RidgeCV from standardised features to [e, m] (alpha by leave-one-out);
- `mlp`: scikit-learn's MLPRegressor (one hidden ReLU layer) to standardised [e, m].
A regression's prediction shrinks towards the training mean, whose norm is far below a
solution's, so every predicted e and m is rescaled to the median norm of the training vectors
(measured at training and stored). m is each solution's own m: its group's when shared.

Saved as ENC.safetensors (tensors only: scikit-learn's coefficients, never a pickle) and
ENC.json (kind, the model's identity, the norms, the training run). An encoder is only used
with the model it was trained on: another name, width, vocabulary or weights is refused.

Seeds: seed 0 starts at the prediction; seed s > 0 at the prediction plus a seeded random
vector of PERTURBATION x its norm (0.05, about the radius within which a solution keeps its
text: distinct starts in the prediction's neighbourhood). A restart after a stall falls back
to the recipe's own init (fitting.py uses a warm start for restart 0 only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.fitting import Problem, seeded_vector
from ..errors import ProtoscopeError, StoreError
from ..store.runstore import write_json
from ..store.texts import Text
from .network import predict

KINDS = ("nearest", "ridge", "mlp", "end-to-end")
FORMAT = "protoscope-encoder/1"
PERTURBATION = 0.05
SHIPPED = pathlib.Path(__file__).resolve().parent / "encoders"
_BATCH = 64


@dataclass
class Encoder:
    """A learned map text -> (e, m); `tensors` hold every learned number, `meta` the rest."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict
    path: pathlib.Path | None = None
    texts: list | None = None  # the training texts as trained (end-to-end), saved as ENC.texts.jsonl.gz

    @property
    def model(self) -> dict:
        return self.meta["model"]

    def predict(self, features: np.ndarray, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [k, f] -> e [k, d], m [k, d] (float32); `lengths` (tokens per text) feed a
        length-conditioned encoder and are ignored by the others."""
        d = int(self.model["d_model"])
        if self.kind == "end-to-end":  # torch, float32: the very function it was trained through
            return predict(self.tensors, features, d, lengths)
        t = {k: v.double().numpy() for k, v in self.tensors.items()}
        x = (np.asarray(features, dtype=np.float64) - t["x_mean"]) / t["x_scale"]
        if self.kind == "nearest":
            keys = t["keys"]
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            pick = (x @ keys.T).argmax(axis=1)
            return (torch.from_numpy(t["e"][pick]).float(), torch.from_numpy(t["m"][pick]).float())
        if self.kind == "ridge":
            y = x @ t["coef"].T + t["intercept"]
        else:
            h = np.maximum(x @ t["w0"] + t["b0"], 0.0)
            y = (h @ t["w1"] + t["b1"]) * t["y_scale"] + t["y_mean"]
        e, m = torch.from_numpy(y[:, :d]).float(), torch.from_numpy(y[:, d:]).float()
        return _rescale(e, self.meta["e_norm"]), _rescale(m, self.meta["m_norm"])

    def save(self, path) -> pathlib.Path:
        """Write ENC.safetensors and ENC.json; returns the JSON's path."""
        from safetensors.torch import save_file


        stem = _stem(path)
        stem.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.float().contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(stem.with_suffix(".safetensors")), metadata={"format": FORMAT})
        extra = {}
        if self.texts:
            import gzip

            name = stem.name + ".texts.jsonl.gz"
            with gzip.open(stem.with_name(name), "wt", encoding="utf-8") as out:
                for t in self.texts:
                    out.write(json.dumps(t.to_json()) + "\n")
            extra["texts_file"] = name
        meta = {**self.meta, **extra, "format": FORMAT, "kind": self.kind,
                "tensors_sha256": _sha256(stem.with_suffix(".safetensors"))}
        write_json(stem.with_suffix(".json"), meta)
        self.path = stem
        return stem.with_suffix(".json")


def _stem(path) -> pathlib.Path:
    path = pathlib.Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rescale(v: torch.Tensor, norm: float) -> torch.Tensor:
    return v * (norm / v.norm(dim=1, keepdim=True).clamp(min=1e-12))


def load_encoder(path) -> Encoder:
    """An encoder from ENC (ENC.json and ENC.safetensors); a missing or damaged one is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = _stem(path)
    meta_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise ProtoscopeError(f"encoder {stem}: {p.name} does not exist")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError, SafetensorError) as err:
        raise StoreError(f"encoder {stem} is damaged: {type(err).__name__}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise StoreError(f"encoder {stem} is not a {FORMAT} file")
    if meta.get("tensors_sha256") != _sha256(tensor_path):
        raise StoreError(f"encoder {stem}: {tensor_path.name} does not match {meta_path.name}")
    return Encoder(meta["kind"], tensors, meta, stem)


def training_texts(encoder: Encoder) -> list | None:
    """The texts an end-to-end encoder was trained on, as trained (None: it saved none)."""
    import gzip


    name = encoder.meta.get("texts_file")
    if not name or encoder.path is None:
        return None
    path = encoder.path.with_name(name)
    if not path.exists():
        raise StoreError(f"{path}: missing (the encoder's JSON names it)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Text.from_json(json.loads(line)) for line in f if line.strip()]


def check_model(encoder: Encoder, loaded) -> None:
    """Refuse an encoder trained on another model: its features and vectors mean nothing here."""
    want, info = encoder.model, loaded.info
    where = f"encoder {encoder.path}" if encoder.path else "the encoder"
    if (want["d_model"], want["vocab_size"]) != (info.d_model, info.vocab_size):
        raise ProtoscopeError(
            f"{where} was trained on {want['name']} (d_model {want['d_model']}, vocabulary "
            f"{want['vocab_size']}), not {info.name} (d_model {info.d_model}, vocabulary "
            f"{info.vocab_size}); train one for this model with `protoscope encoder train RUN`")
    if want["weights_sha256"] != info.weights_sha256:
        raise ProtoscopeError(f"{where} was trained on {want['name']} with other weights than "
                              f"{info.name}'s; train one with `protoscope encoder train RUN`")


def resolve_encoder(spec: str, loaded=None) -> Encoder:
    """`encoder` (the one shipped for the model) or `encoder:PATH`, checked against `loaded`."""
    head, sep, path = spec.partition(":")
    if head != "encoder" or (sep and not path):
        raise ProtoscopeError(f"--init {spec!r}: expected normal, embedding, encoder or encoder:PATH")
    if path:
        encoder = load_encoder(path)
    else:
        if loaded is None:
            raise ProtoscopeError("--init encoder needs the model to pick the shipped encoder")
        encoder = shipped_encoder(loaded)
    if loaded is not None:
        check_model(encoder, loaded)
    return encoder


def shipped_encoder(loaded) -> Encoder:
    """The encoder that ships in the package for this model (matched by its weights)."""
    for meta_path in sorted(SHIPPED.glob("*.json")) if SHIPPED.is_dir() else ():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("model", {}).get("weights_sha256") == loaded.info.weights_sha256:
            return load_encoder(meta_path)
    raise ProtoscopeError(f"no encoder ships for model {loaded.info.name}; train one with "
                          f"`protoscope encoder train RUN --out ENC` and use --init encoder:ENC")


# ---------------------------------------------------------------- features


def text_features(loaded, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """[k, 2 d]: mean over the text's positions and the last position, last layer, BOS first."""
    bos = loaded.info.bos_token_id
    out = []
    model = loaded.model.base_model
    for start in range(0, len(token_lists), _BATCH):
        chunk = [([bos] if bos is not None else []) + list(ids) for ids in token_lists[start:start + _BATCH]]
        width = max(len(c) for c in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, c in enumerate(chunk):
            ids[i, :len(c)], mask[i, :len(c)] = torch.tensor(c), 1
        with torch.no_grad():
            h = model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)
                      ).last_hidden_state.float().cpu()
        text = mask.clone()
        if bos is not None:
            text[:, 0] = 0  # the text's own positions only
        lengths = mask.sum(1)
        mean = (h * text[..., None]).sum(1) / text.sum(1, keepdim=True).clamp(min=1)
        last = h[torch.arange(len(chunk)), lengths - 1]
        out.append(torch.cat([mean, last], dim=1))
    return torch.cat(out).double().numpy()


def model_identity(loaded) -> dict:
    info = loaded.info
    return {"name": info.name, "d_model": info.d_model, "vocab_size": info.vocab_size,
            "weights_sha256": info.weights_sha256}


# ---------------------------------------------------------------- training


def training_solutions(store, loaded, min_solutions: int = 2):
    """The run's converged solutions of its own arrangement: rows, e and m [k, d] (float64 numpy).

    One arrangement's solutions only: a capacity run also holds `mem` rows, whose vectors mean
    nothing as `bos e m*` starts."""
    run_model = store.manifest.get("model", {})
    if run_model.get("weights_sha256") != loaded.info.weights_sha256:
        raise ProtoscopeError(f"{store.path} was fitted on {run_model.get('name')!r}, not on "
                              f"{loaded.info.name}")
    rows, e, m = store.solution_vectors()
    keep = rows["converged"].to_numpy(dtype=bool) & own_arrangement(store, rows)
    if keep.sum() < min_solutions:
        raise ProtoscopeError(f"{store.path} holds {int(keep.sum())} converged solutions; an "
                              f"encoder needs at least {min_solutions}")
    rows = rows[keep].reset_index(drop=True)
    idx = torch.from_numpy(np.flatnonzero(keep))
    return rows, e[idx].double().numpy(), m[idx].double().numpy()


def own_arrangement(store, rows) -> np.ndarray:
    """Which rows are of the run's own arrangement (all of them when the run names none)."""
    arrangement = store.manifest.get("config", {}).get("arrangement")
    if not arrangement:
        return np.ones(len(rows), dtype=bool)
    return (rows["arrangement"] == arrangement).to_numpy(dtype=bool)


def regression(kind: str, xs: np.ndarray, e: np.ndarray, m: np.ndarray, seed: int) -> tuple[dict, dict]:
    """Standardised features -> [e, m] for `nearest`, `ridge` or `mlp`: (tensors, extra meta)."""
    y = np.concatenate([e, m], axis=1)
    if kind == "nearest":
        keys = xs / np.maximum(np.linalg.norm(xs, axis=1, keepdims=True), 1e-12)
        return {"keys": keys, "e": e, "m": m}, {}
    if kind == "ridge":
        from sklearn.linear_model import RidgeCV

        fitted = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(xs, y)
        return {"coef": fitted.coef_, "intercept": fitted.intercept_}, {"alpha": float(fitted.alpha_)}
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    y_mean, y_scale = y.mean(0), y.std() + 1e-12
    net = MLPRegressor(hidden_layer_sizes=(256,), alpha=1e-2, max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(xs, (y - y_mean) / y_scale)
    return ({"w0": net.coefs_[0], "b0": net.intercepts_[0], "w1": net.coefs_[1],
             "b1": net.intercepts_[1], "y_mean": y_mean, "y_scale": np.array([y_scale])},
            {"hidden": 256})


def training_meta(store, loaded, rows, e: np.ndarray, m: np.ndarray) -> dict:
    """What every kind records: the model, the features, the norms and the training run."""
    return {
        "model": model_identity(loaded),
        "features": "last layer of the frozen model on [BOS] + text: mean over text positions, then last position",
        "e_norm": float(np.median(np.linalg.norm(e, axis=1))),
        "m_norm": float(np.median(np.linalg.norm(m, axis=1))),
        "trained_on": trained_on(store, rows),
    }


def trained_on(store, rows) -> dict:
    """The run an encoder learned from, by its folder name and what made it (a shipped file
    carries no machine paths), and the solutions it used."""
    config = store.manifest.get("config", {})
    return {"run": store.path.name, "texts_spec": config.get("texts"),
            "text_seed": config.get("text_seed"),
            "solutions": int(len(rows)),
            "texts": int(rows["text_id"].nunique()),
            "lengths": sorted({int(n) for n in rows["length"]}),
            "arrangements": sorted(set(rows["arrangement"])),
            "share": sorted(set(rows["share"]))}


# ---------------------------------------------------------------- starts


def encoder_starts(encoder: Encoder, loaded, problems: Sequence[Problem],
                   spread: float = PERTURBATION) -> list[Problem]:
    """The problems with init_e / init_m from the encoder (seed > 0: perturbed by `spread` x
    the prediction's norm, see above)."""
    if not problems:
        return []
    unique = sorted({p.targets for p in problems})
    e, m = encoder.predict(text_features(loaded, unique), [len(t) for t in unique])
    row = {t: i for i, t in enumerate(unique)}
    out = []
    for p in problems:
        i = row[p.targets]
        out.append(dataclasses.replace(p, init_e=_perturbed(e[i], p, "e", spread),
                                       init_m=_perturbed(m[i], p, "m", spread)))
    return out


def _perturbed(v: torch.Tensor, p: Problem, name: str, spread: float = PERTURBATION) -> torch.Tensor:
    if p.seed == 0 or spread == 0:
        return v.clone()
    noise = seeded_vector(f"encoder|{p.text_id}|{p.seed}|{name}", v.shape[0], 1.0)
    return v + noise * (spread * float(v.norm()) / float(noise.norm()))


def recipe_starts(problems: Sequence[Problem], recipe, info) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (restart 0) e and m the fitting loop draws for each problem under `recipe`
    when nothing is shared and there is no warm start (fitting.Batch._init)."""
    scale = recipe.init_scale * (info.embedding_std if recipe.init == "embedding" else 1.0)
    e = [seeded_vector(f"{p.text_id}|{p.seed}|0|e", info.d_model, scale) for p in problems]
    m = [seeded_vector(f"{p.text_id}|{p.seed}|0|m", info.d_model, scale) for p in problems]
    return torch.stack(e), torch.stack(m)


def zero_step_accuracy(decoder, e: torch.Tensor, m: torch.Tensor, problems: Sequence[Problem]) -> np.ndarray:
    """Accuracy of each start itself, decoded once with no optimiser step."""
    targets = torch.tensor([p.targets for p in problems], device=decoder.loaded.device)
    dev = decoder.loaded.device
    out = []
    for s in range(0, len(problems), _BATCH):
        sl = slice(s, s + _BATCH)
        with torch.no_grad():
            out.append(decoder(e[sl].to(dev), m[sl].to(dev), targets[sl]).accuracy.float().cpu())
    return torch.cat(out).numpy()
