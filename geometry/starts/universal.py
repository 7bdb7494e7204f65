"""Can one m serve many texts? Training a universal m over a training set of texts.

The paper's main experiments share m across texts and seeds, and `fit --m-from` reuses such an
m frozen, fitting e alone. A share group (fitting.py) is the wrong tool to train one over
hundreds of texts: it is one joint optimisation that stops only when every member is exact at
once, so a large group runs to its budget (4 texts x 3 seeds at 12 tokens ran 33 minutes
without finishing). This loop trains one m the way a model is trained over a data set:

- every text has its own e, kept in a cache ([texts, d]) with its own Adam state across
  visits. A cached e is cheap to carry (d floats a text) and stays next to a solution for the
  slowly moving m, so a visit tracks it in a few steps, and the share exact after an epoch
  says what the m does for texts whose e has been fitted. A fresh e per visit (re-fitted
  briefly, 20 or 40 steps) was tried on a tiny model: most visits ended far from any solution
  and the m it trained did no better for later e-only fits than a random m (8 vs 9 of 24
  texts exact in 80 steps; the cached loop's m: 13).
- an epoch visits every text once, in minibatches of `batch_texts` texts (a seeded shuffle per
  epoch); a visit is `e_steps` optimiser steps on the minibatch: one forward/backward of the
  one shared decoder, then Adam on the minibatch's e rows (the other rows and their state stay
  put) and Adam on m with the summed loss's gradient. m moves at `lr_m`, below e's `lr`, so a
  step for one minibatch does not undo the e of texts visited before.
- after each epoch every text is decoded once with its cached e and the current m: mean
  accuracy and the share of texts exact. Training stops after `epochs` epochs, once every text
  is exact, or once the share exact has not risen for `patience` epochs while some text is
  exact (before any is, a share of 0 says nothing about whether m still improves); the m kept
  is the best epoch's (share exact, then mean accuracy).
- a text whose e becomes non-finite gets a fresh seeded e and Adam state; a non-finite
  gradient of m skips that step's m update.

On a tiny random model (2 layers, d 64; 24 texts at 4 tokens, 30 epochs) the trained m was
no better than a random m kept frozen in the same loop (share exact 0.71, 0.79, 0.88 against
0.79, 0.92, 0.79 over three text sets, lr_m 0.01; 0.003 and 0.03, or m moved once a visit on
the visit's mean gradient, were no different), nor for later e-only fits: whether a universal
m helps on a real model is what `bench/starts.py` measures on held-out texts.

Every vector is drawn from a generator seeded by (seed, text) and each epoch's order by (seed,
epoch), so a run on CPU repeats bit for bit, and one resumed from the checkpoint written at the
end of each epoch (m, best m, the e cache, both Adam states, the history: one atomic file
beside the output) ends with the bits of a run never stopped: a kill loses at most the epoch
in flight.

The output is FILE.safetensors with one tensor `m` [d] (what `fit --m-from FILE` reads) and
the metadata in the file itself (and a readable FILE.json beside it): the model's identity, the
arrangement, length, texts (spec, count, and every text, so a benchmark can check its held-out
texts are disjoint), the training settings, the epochs run and the share exact at the kept m.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch

from ..engine.arrangements import parse_arrangement
from ..engine.decoder import Decoder
from ..engine.fitting import _RowAdam, seeded_vector
from ..engine.recipes import resolve_recipe
from ..errors import ProtoscopeError, StoreError
from ..store.checkpoints import load_state, save_state
from ..store.runstore import atomic_write, write_json
from ..store.texts import Text
from ..tables import reconstructed
from .encoder import model_identity

FORMAT = "protoscope-universal-m/1"
CHECKPOINT_FORMAT = "protoscope-universal-m-checkpoint/1"


@dataclass(frozen=True)
class UniversalConfig:
    """What decides the trained m (`epochs` and `patience` only decide where it stops)."""

    length: int
    arrangement: str = "bos e m*"
    epochs: int = 10
    batch_texts: int = 16
    e_steps: int = 8  # optimiser steps per minibatch visit
    lr: float = 0.05  # e's Adam rate: the default recipe's
    lr_m: float = 0.01  # m's Adam rate
    patience: int = 3  # epochs without a higher share exact (once one text is) before stopping
    seed: int = 0

    def __post_init__(self):
        for name in ("length", "epochs", "batch_texts", "e_steps", "patience"):
            if getattr(self, name) < 1:
                raise ProtoscopeError(f"--{name.replace('_', '-')} must be at least 1, "
                                      f"got {getattr(self, name)}")
        for name in ("lr", "lr_m"):
            if not getattr(self, name) > 0:
                raise ProtoscopeError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if "m" not in parse_arrangement(self.arrangement).uses:
            raise ProtoscopeError(f"a universal m needs an arrangement with m, not {self.arrangement!r}")

    def trajectory(self) -> dict:
        """The fields a resumed training must share with the one it resumes."""
        d = asdict(self)
        del d["epochs"], d["patience"]
        return d


@dataclass
class UniversalM:
    """The trained m [d] and everything recorded about it (`meta`, JSON-ready)."""

    m: torch.Tensor
    meta: dict

    @property
    def history(self) -> list[dict]:
        return self.meta["history"]


def texts_sha256(texts: Sequence, length: int) -> str:
    """A hash of the training set as the loop sees it: ids and target prefixes, in order."""
    material = json.dumps([[t.text_id, list(t.prefix(length))] for t in texts])
    return hashlib.sha256(material.encode()).hexdigest()


def train_universal_m(decoder: Decoder, texts: Sequence, config: UniversalConfig, *,
                      checkpoint: str | pathlib.Path | None = None,
                      on_epoch: Callable[[dict], None] | None = None,
                      on_step: Callable[[int], None] | None = None) -> UniversalM:
    """Train one m over `texts` (each with a prefix of `config.length` tokens).

    `checkpoint`: a file written atomically after every epoch and resumed from when it exists
    (a checkpoint of another training is refused); the caller removes it once the result is
    saved. `on_epoch(record)` after each epoch; `on_step(step)` after each optimiser step.
    """

    if not texts:
        raise ProtoscopeError("a universal m needs at least one training text")
    loaded = decoder.loaded
    if parse_arrangement(config.arrangement).spec != decoder.arrangement.spec:
        raise ProtoscopeError(f"the decoder's arrangement {decoder.arrangement.spec!r} is not "
                              f"{config.arrangement!r}")
    dev, d, n = loaded.device, loaded.info.d_model, len(texts)
    targets = torch.tensor([t.prefix(config.length) for t in texts], device=dev)
    recipe = resolve_recipe("default", lr=config.lr)
    scale = recipe.init_scale * loaded.info.embedding_std  # the default recipe's init
    signature = {"format": CHECKPOINT_FORMAT, "model": model_identity(loaded),
                 "texts_sha256": texts_sha256(texts, config.length), **config.trajectory()}
    state = _State.fresh(texts, config, d, scale, recipe, dev)
    path = pathlib.Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state.restore(path, signature, recipe, dev)
    started = time.perf_counter() - state.seconds
    while not state.done(config):
        epoch = len(state.history) + 1
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        for start in range(0, n, config.batch_texts):
            rows = order[start:start + config.batch_texts].to(dev)
            for _ in range(config.e_steps):
                state.step(decoder, rows, targets[rows], texts, scale)
                if on_step:
                    on_step(state.steps)
        accuracy = evaluate(decoder, state.E, state.M[0], targets, config.batch_texts * 4)
        record = {"epoch": epoch, "steps": state.steps,
                  "mean_accuracy": round(float(accuracy.mean()), 6),
                  "share_exact": round(float(reconstructed(accuracy).float().mean()), 6),
                  "restarts": int(state.restarts.sum()),
                  "seconds": round(time.perf_counter() - started, 1)}
        state.end_epoch(record, accuracy)
        if path is not None:
            state.save(path, signature)
        if on_epoch:
            on_epoch(record)
    best = state.history[state.best_epoch - 1]
    meta = {"format": FORMAT, "model": model_identity(loaded), "arrangement": config.arrangement,
            "length": config.length, "n_texts": n, "texts_sha256": signature["texts_sha256"],
            "settings": asdict(config), "epochs": len(state.history), "steps": state.steps,
            "best_epoch": state.best_epoch, "share_exact": best["share_exact"],
            "mean_accuracy": best["mean_accuracy"],
            "stopped": state.stop_reason(config), "history": state.history,
            "seconds": round(time.perf_counter() - started, 1)}
    return UniversalM(state.best_m[0].detach().cpu().clone(), meta)


def evaluate(decoder: Decoder, E: torch.Tensor, m: torch.Tensor, targets: torch.Tensor,
             chunk: int = 64) -> torch.Tensor:
    """Accuracy [texts] of each text's e with the one m, no gradient."""
    out = []
    with torch.no_grad():
        for s in range(0, len(targets), chunk):
            out.append(decoder(E[s:s + chunk], m, targets[s:s + chunk]).accuracy.float().cpu())
    return torch.cat(out)


class _State:
    """m, its best, the e cache and both Adam states, the history: all a resume needs."""

    TENSORS = ("M", "best_m", "E", "restarts")

    def __init__(self):
        self.history: list[dict] = []
        self.best_epoch, self.best_key, self.since_best = 0, (-1.0, -1.0), 0
        self.steps, self.seconds = 0, 0.0

    @classmethod
    def fresh(cls, texts, config: UniversalConfig, d: int, scale: float, recipe, dev) -> _State:
        s = cls()
        s.M = seeded_vector(f"universal|{config.seed}|m", d, scale)[None].to(dev)
        s.best_m = s.M.clone()
        s.E = torch.stack([_e_start(config.seed, t.text_id, 0, d, scale) for t in texts]).to(dev)
        s.restarts = torch.zeros(len(texts), dtype=torch.long, device=dev)
        s.seed = config.seed
        s.adam_e = _RowAdam(len(texts), d, recipe, dev)
        s.adam_m = _RowAdam(1, d, replace(recipe, lr=config.lr_m), dev)
        return s

    def step(self, decoder: Decoder, rows: torch.Tensor, targets: torch.Tensor, texts, scale) -> None:
        """One forward/backward on the minibatch `rows`; Adam on their e and on m."""
        e = self.E[rows].detach().requires_grad_(True)
        m = self.M[0].detach().requires_grad_(True)
        loss = decoder(e, m, targets, grad=True).total_loss
        finite = torch.isfinite(loss)
        torch.where(finite, loss, 0.0).sum().backward()
        grad_e = torch.zeros_like(self.E)
        grad_e[rows] = e.grad
        active = torch.zeros(len(self.E), dtype=torch.bool, device=self.E.device)
        active[rows] = True
        bad = torch.zeros_like(active)
        bad[rows] = ~finite | ~torch.isfinite(e.grad).all(1)
        with torch.no_grad():
            self.adam_e.step(self.E, torch.nan_to_num(grad_e), active & ~bad)
            if bool(torch.isfinite(m.grad).all()):
                self.adam_m.step(self.M, m.grad[None], torch.ones(1, dtype=torch.bool, device=m.device))
        bad |= ~torch.isfinite(self.E).all(1)
        for i in torch.nonzero(bad).flatten().tolist():  # a fresh seeded e and Adam state
            self.restarts[i] += 1
            self.E[i] = _e_start(self.seed, texts[i].text_id, int(self.restarts[i]), self.E.shape[1],
                                 scale).to(self.E.device)
            self.adam_e.reset(torch.tensor([i], device=self.E.device))
        self.steps += 1

    def end_epoch(self, record: dict, accuracy: torch.Tensor) -> None:
        self.history.append(record)
        self.seconds = record["seconds"]
        key = (record["share_exact"], record["mean_accuracy"])
        if key > self.best_key:
            self.best_key, self.best_epoch = key, record["epoch"]
            self.best_m = self.M.detach().clone()
        # The plateau clock runs once some text is exact: before that, a share of 0 says
        # nothing about whether m still improves.
        before = max((r["share_exact"] for r in self.history[:-1]), default=0.0)
        higher = record["share_exact"] > before or record["share_exact"] == 0
        self.since_best = 0 if higher else self.since_best + 1

    def done(self, config: UniversalConfig) -> bool:
        return self.stop_reason(config) is not None

    def stop_reason(self, config: UniversalConfig) -> str | None:
        if not self.history:
            return None
        if self.history[-1]["share_exact"] >= 1.0:
            return "every text exact"
        if self.since_best >= config.patience:
            return f"share exact not higher for {config.patience} epochs"
        if len(self.history) >= config.epochs:
            return f"budget of {config.epochs} epochs"
        return None

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path: pathlib.Path, signature: dict) -> None:
        tensors = {name: getattr(self, name) for name in self.TENSORS}
        for name in ("e", "m"):
            adam = getattr(self, f"adam_{name}")
            tensors.update({f"adam_{name}.m1": adam.m1, f"adam_{name}.m2": adam.m2, f"adam_{name}.t": adam.t})
        state = {"signature": signature, "history": self.history, "best_epoch": self.best_epoch,
                 "best_key": list(self.best_key), "since_best": self.since_best, "steps": self.steps,
                 "seconds": self.seconds}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state(path, tensors, state)

    def restore(self, path: pathlib.Path, signature: dict, recipe, dev) -> None:
        tensors, state = load_state(path, "delete it to train from the start")
        if state.get("signature") != json.loads(json.dumps(signature)):
            raise StoreError(f"{path} is the checkpoint of another universal m training (other "
                             f"model, texts, length or settings); delete it or use --overwrite")
        for name in self.TENSORS:
            setattr(self, name, tensors[name].to(dev))
        for name in ("e", "m"):
            adam = getattr(self, f"adam_{name}")
            adam.m1, adam.m2, adam.t = (tensors[f"adam_{name}.{k}"].to(dev) for k in ("m1", "m2", "t"))
        self.history, self.best_epoch = state["history"], state["best_epoch"]
        self.best_key, self.since_best = tuple(state["best_key"]), state["since_best"]
        self.steps, self.seconds = state["steps"], state["seconds"]


def _e_start(seed: int, text_id: str, restart: int, d: int, scale: float) -> torch.Tensor:
    return seeded_vector(f"universal|{seed}|{text_id}|{restart}|e", d, scale)


# ---------------------------------------------------------------- the file


def checkpoint_path(out) -> pathlib.Path:
    """Where the training of OUT.safetensors keeps its epoch checkpoint."""
    out = pathlib.Path(out)
    return out.with_name(out.stem + ".checkpoint.safetensors")


def save_universal_m(out, result: UniversalM, texts: Sequence) -> pathlib.Path:
    """Write OUT.safetensors (tensor `m` [d], the metadata inside) and OUT.json; atomic each."""
    from safetensors.torch import save_file

    out = pathlib.Path(out)
    meta = dict(result.meta)
    length = meta["length"]
    meta["texts"] = [{"text_id": t.text_id, "source": t.source, "context_id": t.context_id,
                      "text": t.text, "token_ids": list(t.prefix(length))} for t in texts]
    m = result.m.detach().float().cpu().contiguous()
    meta["m_sha256"] = hashlib.sha256(m.numpy().tobytes()).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, default=str)
    atomic_write(out, lambda tmp: save_file({"m": m}, str(tmp), metadata={"format": FORMAT, "meta": text}))
    write_json(out.with_suffix(".json"), meta)
    return out


def read_universal_m(path) -> tuple[torch.Tensor, dict]:
    """m [d] and the metadata of a file `save_universal_m` wrote; anything else is one line."""
    from safetensors import SafetensorError, safe_open

    path = pathlib.Path(path)
    if not path.is_file():
        raise ProtoscopeError(f"universal m {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            m = f.get_tensor("m") if "m" in f.keys() else None
        meta = json.loads(metadata["meta"]) if metadata.get("format") == FORMAT else None
    except (OSError, ValueError, SafetensorError) as err:
        raise StoreError(f"universal m {path} is damaged: {type(err).__name__}") from None
    if meta is None or m is None:
        raise ProtoscopeError(f"{path} is not a {FORMAT} file (written by `protoscope encoder universal-m`)")
    return m.reshape(-1).float(), meta


def recorded_texts(meta: dict) -> list:
    """The training texts a universal m file records, as Text objects (token ids: the prefix)."""

    return [Text(t["text_id"], t["source"], t["context_id"], t["text"], tuple(t["token_ids"]))
            for t in meta.get("texts", [])]
