"""Does an encoder start better when it learns from the decoder itself? End-to-end training.

The regression encoders (encoder.py) imitate a run's solutions. A text has many solutions
(each seed finds its own), so a regression aims near their average, which need not
reconstruct anything. The paper's suggested direction trains the encoder on what a start is
for: the reconstruction cross-entropy of decoder(encoder(text)) through the frozen model.

- the network: the `mlp` kind's (features -> one hidden ReLU layer -> [e, m]) in torch, each
  output rescaled to a norm that is learned too (log-parametrised). It starts as the `mlp`
  kind fitted by scikit-learn on the training slice's solutions, so the fine-tuning begins
  where `mlp` ends and the zero-step accuracy of that start is recorded beside its own;
- the loss: mean per-token cross-entropy of the one shared Decoder on batches of training
  texts (one length per batch), plus `regression` x the cosine distance of each predicted e
  and m to the NEAREST of its text's solutions (nearest, not the mean: a mean of distinct
  solutions is no solution). The regression term is off by default: the start already sits
  where `mlp` puts it, and the reconstruction loss is the quantity a start is judged by;
  a weight > 0 keeps predictions near solutions the fitting loop found, should the loss alone
  drift elsewhere on texts it never saw;
- only the encoder's tensors train (AdamW; weight decay on the two weight matrices); the
  frozen model must have no parameter that requires a gradient (checked), so it gets none;
- a seeded held-out slice of the run's texts trains neither the `mlp` start nor the
  fine-tuning. It is split by text (every length of a text on one side) and by context
  (texts generated from one context all on one side), so no held-out text continues a prompt
  a training text continues; the epoch with the lowest held-out loss
  is kept (epoch 0, the `mlp` start, included), and training stops `patience` epochs after it;
- features are the frozen model's, computed once without gradient, as for the other kinds.

Recorded in the encoder's JSON: `zero_step_accuracy` (accuracy of decoder(encoder(text)) with
no optimiser step, at the kept epoch, training texts and held-out slice) and `end_to_end`
(options, split, the `mlp` start's and the kept encoder's loss and accuracy, per-epoch history).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..engine.arrangements import DEFAULT_ARRANGEMENT
from ..engine.decoder import Decoder
from ..engine.fitting import _RowAdam
from ..engine.recipes import resolve_recipe
from ..errors import ProtoscopeError
from .encoder import (Encoder, PERTURBATION, _stem, own_arrangement, regression, text_features,
                      trained_on, training_meta, training_solutions)
from .network import forward, length_conditioned

TRAINED = ("w0", "b0", "w1", "b1", "log_e_norm", "log_m_norm", "w_len", "len_norm")
DECAYED = ("w0", "w1")


@dataclass(frozen=True)
class Options:
    """How the fine-tuning runs; defaults sized for a few hundred texts at 16 tokens."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 16
    holdout: float = 0.2  # share of the run's texts held out for early stopping (0: none)
    patience: int = 5  # epochs without a lower held-out loss before stopping
    regression: float = 0.0  # weight of the nearest-solution cosine term (see above)
    unroll: int = 0  # solver steps taken from the prediction inside the loss (see `_Data.loss`)

    def __post_init__(self):
        if self.unroll < 0:
            raise ProtoscopeError(f"--unroll must be at least 0, got {self.unroll}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ProtoscopeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "regression"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
                raise ProtoscopeError(f"--{name.replace('_', '-')} must be a finite number "
                                      f"{'above' if name == 'lr' else 'at least'} 0, got {value}")
        if not 0 <= self.holdout < 1:
            raise ProtoscopeError(f"--holdout must be in [0, 1), got {self.holdout}")


def split_texts(texts, holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held out) text ids of `texts` (Text records): a seeded share `holdout` of
    their groups held out, at least one; a group is a context (context_id), else one text."""
    groups: dict[str, list[str]] = {}
    for t in sorted(texts, key=lambda t: t.text_id):
        groups.setdefault(t.context_id or f"text:{t.text_id}", []).append(t.text_id)
    keys = sorted(groups)
    n_held = max(1, round(holdout * len(keys))) if holdout > 0 else 0
    if len(keys) - n_held < 1:
        raise ProtoscopeError(f"the run has {len(keys)} text(s) or context(s): too few to hold out "
                              f"{holdout:g} of them and train on the rest (use --holdout 0)")
    order = np.random.default_rng(seed).permutation(len(keys))
    held = sorted(t for i in order[:n_held] for t in groups[keys[i]])
    return sorted(t for k in keys for t in groups[k] if t not in held), held


def train_end_to_end(store, loaded, seed: int = 0, options: Options = Options(),
                     log: Callable[[str], None] | None = None, extra_texts=(), extra_spec: str = "",
                     base=None, lengths: Sequence[int] = (), checkpoint=None, resume: bool = False,
                     extra_about: dict | None = None):
    """An `end-to-end` Encoder trained on `store`'s texts through the frozen `loaded` model.

    `extra_texts` (Text records, named by `extra_spec`) train it too: the reconstruction loss
    needs no solution, so the training set can grow far past what the run fitted. With
    `lengths`, each extra text is trained at ONE of those lengths it is long enough for (a
    seeded round robin, so every length gets about the same share); without, at each of the
    run's lengths. A text the run holds (same id or same string) is not added twice; extra
    texts join the held-out split like the run's own; `extra_about` (e.g. their text seed) is
    recorded beside their spec.

    `base` (an end-to-end Encoder) is the start instead of the `mlp` fitted on the run's
    solutions; `store` may then be None (texts only). Every encoder trained here is
    length-conditioned (`forward`), its length parameters starting at zero.

    `checkpoint` (a path): the training state is written there after every epoch; with
    `resume`, a run that stopped continues from its last finished epoch (the same texts,
    options and start are checked); without, an existing checkpoint is refused."""

    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    if trainable:
        raise ProtoscopeError(f"the model must be frozen for end-to-end training; {trainable[0]} "
                              f"requires a gradient")
    if store is None and base is None:
        raise ProtoscopeError("end-to-end training needs a run's solutions or a start encoder (--from)")
    if base is not None and base.kind != "end-to-end":
        raise ProtoscopeError(f"--from must name an end-to-end encoder, not a {base.kind} one")
    started, started_cpu = time.perf_counter(), time.process_time()
    items, by_id, added, (solutions, e_all, m_all) = _items(store, loaded, extra_texts,
                                                            list(lengths), seed)
    if not items:
        raise ProtoscopeError("no training texts: none of the --texts is long enough for "
                              f"{', '.join(map(str, lengths))} tokens")
    train_ids, held_ids = split_texts([by_id[t] for t in sorted({t for t, _ in items})],
                                      options.holdout, seed)
    targets = [by_id[t].prefix(n) for t, n in items]
    item_of = {key: i for i, key in enumerate(items)}
    train_set = set(train_ids)
    is_train = np.array([t in train_set for t, _ in items])
    keep = np.array([t in train_set for t in solutions["text_id"]], dtype=bool)
    sol_rows = solutions[keep].reset_index(drop=True)
    e, m = e_all[keep], m_all[keep]
    sol_item = np.array([item_of[(t, int(n))] for t, n in zip(sol_rows["text_id"], sol_rows["length"])],
                        dtype=np.int64)
    fingerprint = _fingerprint(items, train_ids, options, seed, base, loaded)
    saved = _load_checkpoint(checkpoint, resume, fingerprint)
    x = saved["x"].numpy() if saved else text_features(loaded, targets)

    extra: dict = {}
    if base is not None:  # the given encoder is the start
        t = length_conditioned({k: v.float() for k, v in base.tensors.items()})
        meta = {"kind": "end-to-end", "model": base.model, "features": base.meta["features"],
                "e_norm": float(t["log_e_norm"].exp()), "m_norm": float(t["log_m_norm"].exp()),
                "trained_on": trained_on(store, sol_rows) if store is not None else {"run": None},
                "started_from": {"encoder": base.path.name if base.path else None,
                                 "tensors_sha256": base.meta.get("tensors_sha256")}}
        arrangement = (store.manifest.get("config", {}).get("arrangement") if store else None) \
            or base.meta.get("end_to_end", {}).get("arrangement") or DEFAULT_ARRANGEMENT
    else:  # the `mlp` start, fitted on the training slice's solutions only

        if keep.sum() < 2:
            raise ProtoscopeError(f"{store.path}: {int(keep.sum())} converged solution(s) among the "
                                  f"training texts; the mlp start needs at least 2")
        xt = x[sol_item]
        x_mean, x_scale = xt.mean(0), xt.std(0) + 1e-6
        start, extra = regression("mlp", (xt - x_mean) / x_scale, e, m, seed)
        meta = {"kind": "end-to-end", **training_meta(store, loaded, sol_rows, e, m)}
        start.update(x_mean=x_mean, x_scale=x_scale, log_e_norm=np.log([meta["e_norm"]]),
                     log_m_norm=np.log([meta["m_norm"]]))
        t = length_conditioned({k: torch.from_numpy(np.asarray(v, dtype=np.float64)).float()
                                for k, v in start.items()})
        arrangement = store.manifest.get("config", {}).get("arrangement") or DEFAULT_ARRANGEMENT

    d = int(loaded.info.d_model)
    data = _Data(Decoder(loaded, arrangement), torch.from_numpy(x).float(), targets, d,
                 torch.from_numpy(e).float(), torch.from_numpy(m).float(), sol_item)
    train_idx, held_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    params = {k: t[k].clone().requires_grad_(True) for k in TRAINED}
    opt = torch.optim.AdamW(
        [{"params": [params[k] for k in DECAYED], "weight_decay": options.weight_decay},
         {"params": [params[k] for k in TRAINED if k not in DECAYED], "weight_decay": 0.0}],
        lr=options.lr)
    gen = torch.Generator().manual_seed(seed)

    if saved:
        with torch.no_grad():
            for k in TRAINED:
                params[k].copy_(saved["params"][k])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        first, history, skipped = saved["first"], saved["history"], saved["skipped"]
        best = (saved["best_loss"], saved["best_epoch"], saved["best"])
        if log:
            log(f"resumed after epoch {history[-1]['epoch']} (kept so far: epoch {best[1]})")
    else:
        first = {"train": data.evaluate(t, train_idx, options.batch_size),
                 "held_out": data.evaluate(t, held_idx, options.batch_size, options.unroll)}
        history = [{"epoch": 0, "train_loss": first["train"]["loss"], **_held(first["held_out"]),
                    "seconds": round(time.perf_counter() - started, 1),
                    "cpu_seconds": round(time.process_time() - started_cpu, 1)}]
        best = (_judged(first["held_out"]), 0, {k: t[k].clone() for k in TRAINED})
        skipped = 0
    stopped = history[-1]["epoch"] - best[1] >= options.patience and bool(len(held_idx))
    for epoch in range(history[-1]["epoch"] + 1, options.epochs + 1):
        if stopped:
            break
        tick, tick_cpu = time.perf_counter(), time.process_time()
        losses = []
        for batch in data.batches(train_idx, options.batch_size, gen):
            current = {**t, **params}
            loss = data.loss(current, batch, options.regression, options.unroll)
            if not torch.isfinite(loss):  # one bad batch must not poison the encoder: no step
                skipped += 1
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append((float(loss.detach()), len(batch)))
        now = {**t, **{k: v.detach() for k, v in params.items()}}
        held = data.evaluate(now, held_idx, options.batch_size, options.unroll)
        train_loss = sum(a * b for a, b in losses) / sum(b for _, b in losses) if losses else None
        history.append({"epoch": epoch, "train_loss": train_loss, **_held(held),
                        "seconds": round(time.perf_counter() - tick, 1),
                        "cpu_seconds": round(time.process_time() - tick_cpu, 1)})
        if log:
            log(f"epoch {epoch}: training loss {train_loss if train_loss is None else round(train_loss, 4)}" + (
                f", held-out loss {held['loss']:.4f}, accuracy {held['accuracy']:.3f} "
                + " ".join(f"{n}:{a:.3f}" for n, a in held["by_length"].items())
                if len(held_idx) else "") + f" ({history[-1]['seconds']} s)")
        if not len(held_idx) or _judged(held) < best[0]:
            best = (_judged(held), epoch, {k: v.detach().clone() for k, v in params.items()})
        elif epoch - best[1] >= options.patience:
            stopped = True
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "x": torch.from_numpy(x), "params": {k: v.detach() for k, v in params.items()},
                "opt": opt.state_dict(), "gen": gen.get_state(), "first": first,
                "history": history, "skipped": skipped, "best_loss": best[0],
                "best_epoch": best[1], "best": best[2]})
    kept = {**t, **best[2]}
    final = {"train": data.evaluate(kept, train_idx, options.batch_size),
             "held_out": data.evaluate(kept, held_idx, options.batch_size, options.unroll)}
    meta.update({
        "seed": seed, "perturbation": PERTURBATION, **extra,
        "lengths": sorted({n for _, n in items}), "length_conditioned": True,
        "zero_step_accuracy": {k: v["accuracy"] for k, v in final.items()},
        "end_to_end": {
            "options": asdict(options), "arrangement": arrangement,
            "loss": "mean per-token cross-entropy (nats) of decoder(encoder(text))"
                    + (f" after {options.unroll} steps of the default fit recipe's Adam from it "
                       f"(first order: the steps' displacement is held constant)"
                       if options.unroll else "")
                    + (f" + {options.regression:g} x nearest-solution cosine distance"
                       if options.regression else ""),
            "split": "seeded, by text and by context", "train_texts": len(train_ids),
            "items": {"train": int(len(train_idx)), "held_out": int(len(held_idx))},
            "extra_texts": {"spec": extra_spec, **(extra_about or {}), "texts": len(added["texts"]),
                            "sources": sorted({t.source for t in added["texts"]}),
                            "lengths": "one each (seeded round robin)" if lengths else "each run length",
                            "skipped_already_in_run": added["duplicates"],
                            "skipped_too_short": added["short"]},
            "held_out_texts": held_ids,
            "epochs_run": history[-1]["epoch"], "kept_epoch": best[1],
            "mlp_start" if base is None else "start": first, "kept": final,
            "norms": {"e": float(kept["log_e_norm"].exp()), "m": float(kept["log_m_norm"].exp())},
            "history": history, "skipped_batches": skipped,
            "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
            # the training's cost: features, the start's scores and every epoch (the texts' own
            # making, e.g. generating continuations, comes before and is not counted here)
            "cpu_hours": round(sum(h.get("cpu_seconds", 0.0) for h in history) / 3600, 3)},
    })
    return Encoder("end-to-end", {k: v.contiguous() for k, v in kept.items()}, meta,
                   texts=_trained_prefixes(loaded, by_id, items))


def _trained_prefixes(loaded, by_id: dict, items) -> list:
    """Each training text as the prefix it was trained at (its longest), for disjointness checks."""
    import dataclasses

    longest: dict[str, int] = {}
    for t, n in items:
        longest[t] = max(n, longest.get(t, 0))
    out = []
    for t, n in sorted(longest.items()):
        ids = tuple(by_id[t].prefix(n))
        out.append(dataclasses.replace(by_id[t], text=loaded.tokenizer.decode(list(ids)),
                                       token_ids=ids, token_nll=None))
    return out


def _items(store, loaded, extra_texts, lengths: list[int], seed: int):
    """The (text_id, length) items to train on, the texts by id, what the extra texts added,
    and the run's converged solutions (rows, e, m; empty without a run)."""
    import pandas as pd


    d = int(loaded.info.d_model)
    if store is None:
        items, by_id = set(), {}
        solved = (pd.DataFrame({"text_id": [], "length": []}), np.zeros((0, d)), np.zeros((0, d)))
    else:
        solved = training_solutions(store, loaded, min_solutions=0)
        rows = store.solutions()
        rows = rows[own_arrangement(store, rows)]
        items = {(t, int(n)) for t, n in zip(rows["text_id"], rows["length"])}
        by_id = {t.text_id: t for t in store.texts()}
    added = _extra_items(extra_texts, by_id, lengths or sorted({n for _, n in items}),
                         one_each=bool(lengths), seed=seed)
    by_id.update({t.text_id: t for t in added["texts"]})
    return sorted(items | set(added["items"])), by_id, added, solved


def _fingerprint(items, train_ids, options: Options, seed: int, base, loaded) -> str:
    """What a resumed training must share with the one that wrote the checkpoint."""
    import hashlib
    import json

    o = {k: v for k, v in asdict(options).items() if k not in ("epochs", "patience")}
    key = json.dumps({"items": items, "train": train_ids, "options": o, "seed": seed,
                      "base": base.meta.get("tensors_sha256") if base is not None else None,
                      "model": loaded.info.weights_sha256}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def checkpoint_path(out) -> pathlib.Path:
    """Where `encoder train --out ENC` keeps its training state: ENC.ckpt.pt."""

    stem = _stem(out)
    return stem.with_name(stem.name + ".ckpt.pt")


def _load_checkpoint(path, resume: bool, fingerprint: str) -> dict | None:
    import pathlib

    if path is None or not pathlib.Path(path).exists():
        return None
    if not resume:
        raise ProtoscopeError(f"{path} holds a training that did not finish: --resume continues "
                              f"it, or remove the file to start over")
    try:
        saved = torch.load(path, weights_only=True)  # tensors and plain containers: no pickle
    except Exception as exc:  # a damaged file is one line
        raise ProtoscopeError(f"{path}: not a readable training checkpoint ({exc.__class__.__name__})") from None
    if saved.get("fingerprint") != fingerprint:
        raise ProtoscopeError(f"{path} was written by a training on other texts, options, seed or "
                              f"start: it cannot be resumed with these")
    return saved


def _save_checkpoint(path, state: dict) -> None:
    import os
    import pathlib

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _extra_items(texts, by_id: dict, lengths: list[int], one_each: bool = False,
                 seed: int = 0) -> dict:
    """The (text_id, length) items extra texts add, those texts, and how many were left out.
    `one_each`: every text at one length it fits, in a seeded round robin over `lengths`."""
    strings = {t.text for t in by_id.values()}
    out = {"texts": [], "items": [], "duplicates": 0, "short": 0}
    turn = int(np.random.default_rng(seed).integers(len(lengths))) if lengths else 0
    for t in texts:
        if t.text_id in by_id or t.text in strings:
            out["duplicates"] += 1
            continue
        fits = [n for n in lengths if len(t.token_ids) >= n]
        if not fits:
            out["short"] += 1
            continue
        out["texts"].append(t)
        if one_each:
            out["items"].append((t.text_id, fits[turn % len(fits)]))
            turn += 1
        else:
            out["items"] += [(t.text_id, n) for n in fits]
        strings.add(t.text)
    return out


def _judged(held: dict):
    """What picks the kept epoch: the held-out loss where the training is judged (after the
    unrolled steps when there are any)."""
    return held.get("unrolled_loss", held["loss"])


def _held(held: dict) -> dict:
    return {"held_out_loss": held["loss"], "held_out_accuracy": held["accuracy"],
            **({"held_out_unrolled_loss": held["unrolled_loss"],
                "held_out_unrolled_accuracy": held["unrolled_accuracy"]} if "unrolled_loss" in held else {}),
            "held_out_accuracy_by_length": {str(n): a for n, a in held.get("by_length", {}).items()}}


class _Data:
    """The texts, their features and targets, and the one decoder that judges predictions."""

    def __init__(self, decoder, x, targets, d, sol_e, sol_m, sol_item):
        self.decoder, self.x, self.targets, self.d = decoder, x, targets, d
        self.sol_e, self.sol_m, self.sol_item = sol_e, sol_m, torch.from_numpy(sol_item)
        self.lengths = np.array([len(t) for t in targets])

    def _chunks(self, idx: np.ndarray, size: int, gen=None) -> list[np.ndarray]:
        """Batches of one length each (the decoder takes [B, N] targets); shuffled with `gen`."""
        out = []
        for n in sorted(set(self.lengths[idx])):
            same = idx[self.lengths[idx] == n]
            if gen is not None:
                same = same[torch.randperm(len(same), generator=gen).numpy()]
            out += [same[i:i + size] for i in range(0, len(same), size)]
        if gen is not None:
            out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
        return out

    def batches(self, idx, size, gen):
        return self._chunks(idx, size, gen)

    def _decode(self, t, batch, grad: bool, unroll: int = 0):
        """The batch's prediction (after `unroll` solver steps, when > 0) and its decoding."""
        dev = self.decoder.loaded.device
        e, m = forward(t, self.x[batch], self.d, torch.from_numpy(self.lengths[batch]))
        targets = torch.tensor([self.targets[i] for i in batch], device=dev)
        if unroll:
            e, m = self._stepped(e, m, targets, unroll)
        return e, m, self.decoder(e.to(dev), m.to(dev), targets, grad=grad)

    def loss(self, t, batch: np.ndarray, regression: float, unroll: int = 0) -> torch.Tensor:
        """The training loss of one batch: the reconstruction cross-entropy of the prediction,
        or, with `unroll` K > 0, of where K steps of the fitting loop's own update (the default
        recipe's Adam, fitting._RowAdam) take it: a start judged by what the solver makes of it.
        First order (as first-order MAML / Reptile): the steps' displacement is computed without
        a graph and added to the prediction, so the gradient reaches the encoder through the
        prediction at the end point, at K extra decoder passes per batch and no second derivative."""
        e, m, out = self._decode(t, batch, grad=True, unroll=unroll)
        loss = out.loss.mean()
        if regression:
            own = self.sol_item[None, :] == torch.from_numpy(batch)[:, None]  # [B, S]
            has = own.any(1)
            if has.any():
                far = []
                for pred, sol in ((e, self.sol_e), (m, self.sol_m)):
                    cos = torch.nn.functional.cosine_similarity(pred[:, None], sol[None], dim=-1)
                    far.append((1 - cos).masked_fill(~own, float("inf")).amin(1)[has].mean())
                loss = loss + regression * sum(far)
        return loss

    def _stepped(self, e0, m0, targets, steps: int):
        """e0, m0 moved by `steps` updates of the fit's own Adam; first order (see `loss`)."""

        dev = self.decoder.loaded.device
        recipe = resolve_recipe("default")
        e, m = e0.detach().clone().to(dev), m0.detach().clone().to(dev)  # the steps act in place
        adams = [_RowAdam(len(e), self.d, recipe, dev) for _ in range(2)]
        active = torch.ones(len(e), dtype=torch.bool, device=dev)
        with torch.enable_grad():  # the steps need gradients even when the caller scores
            for _ in range(steps):
                e.requires_grad_(True)
                m.requires_grad_(True)
                out = self.decoder(e, m, targets, grad=True)
                ge, gm = torch.autograd.grad(out.total_loss.sum(), [e, m])
                e, m = e.detach(), m.detach()
                adams[0].step(e, ge, active)
                adams[1].step(m, gm, active)
        return e0 + (e.to(e0.device) - e0.detach()), m0 + (m.to(m0.device) - m0.detach())

    def evaluate(self, t, idx: np.ndarray, size: int, unroll: int = 0) -> dict:
        """Mean per-token loss and mean accuracy of decoder(encoder(text)) over `idx` (no step);
        with `unroll` K, also `unrolled_loss` / `unrolled_accuracy` after K solver steps."""
        if not len(idx):
            return {"loss": None, "accuracy": None, "texts": 0}
        out = self._scores(t, idx, size, 0)
        if unroll:
            stepped = self._scores(t, idx, size, unroll)
            out.update(unrolled_loss=stepped["loss"], unrolled_accuracy=stepped["accuracy"])
        return out

    def _scores(self, t, idx: np.ndarray, size: int, unroll: int) -> dict:
        loss, tokens, acc = 0.0, 0, {}
        for batch in self._chunks(idx, size):
            with torch.no_grad():
                _, _, out = self._decode(t, batch, grad=False, unroll=unroll)
            loss += float(out.loss.sum())
            tokens += out.loss.numel()
            acc.setdefault(int(self.lengths[batch[0]]), []).extend(out.accuracy.float().cpu().tolist())
        every = [a for n in acc for a in acc[n]]
        return {"loss": loss / tokens, "accuracy": float(np.mean(every)), "texts": int(len(idx)),
                "by_length": {n: float(np.mean(acc[n])) for n in sorted(acc)}}
