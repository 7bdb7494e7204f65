"""What does the frozen model emit for a batch of proto-token vectors?

The one door to the model for proto-token inputs: fitting, interpolation paths, Bezier curves,
perturbation sweeps, capacity search, the information analyses and the benchmarks all evaluate
vectors here. Three views of the same frozen model:
- one-step decoding (`Decoder.__call__`): given e [B, d], m [B, d], the arrangement and target
  ids [B, N], build `inputs_embeds`, run the model once, and return per-position loss (nats),
  argmax and correctness. Logits are never materialised for more than `max_logits` entries at
  once: the head runs over chunks of positions, and under autograd each chunk is checkpointed
  so its logits are recomputed in the backward pass instead of kept.
- the prompt view (`prompt`, `greedy`): the vectors read as an ordinary prompt (`[bos] e m`, or
  `[bos] mem` for the [mem] baseline) and continued greedily, one position per step with a KV
  cache, as autoregressive decoding runs.
- the attention view (`attention`): per-layer attention weights of the supervised query
  positions of the one-step input, and the share of them each slot (bos, e, m) receives.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .arrangements import SLOT_BOS, SLOT_E, SLOT_M, Arrangement, parse_arrangement
from ..errors import ProtoscopeError


@dataclass
class Decoded:
    """Per-position results of one decoding pass, all [B, N]."""

    loss: torch.Tensor  # cross-entropy in nats (float32); differentiable when asked for
    predicted: torch.Tensor  # argmax token ids
    correct: torch.Tensor  # predicted == target

    @property
    def c_tokens(self) -> torch.Tensor:
        return self.correct.sum(1)

    @property
    def accuracy(self) -> torch.Tensor:
        return self.correct.float().mean(1)

    @property
    def total_loss(self) -> torch.Tensor:
        return self.loss.sum(1)


SLOTS = {SLOT_BOS: "bos", SLOT_E: "e", SLOT_M: "m"}
"""The named slots of an input whose attention share `Attended.mass` reports."""


@dataclass
class Attended:
    """Attention of the supervised query positions of one-step inputs (the attention view)."""

    weights: tuple[torch.Tensor, ...]  # per layer [B, heads, N queries, L keys]
    slots: torch.Tensor  # [L] slot index of each key position (arrangements.SLOT_*, tokens)

    def mass(self) -> dict[str, torch.Tensor]:
        """Per slot name: [layers, B] attention weight on that slot's keys, averaged over heads
        and queries (float32)."""
        return {name: torch.stack([w.float()[..., self.slots == slot].sum(-1).mean((1, 2))
                                   for w in self.weights])
                for slot, name in SLOTS.items()}


class Decoder:
    """Evaluates batches of proto-token vectors against target ids on one frozen model.

    `flat_head` applies the LM head to a [B*n, d] view of the hidden states instead of the
    [B, n, d] slice (same values; a matmul layout that `bench/head_layout.py` compares).
    """

    def __init__(self, loaded, arrangement: Arrangement | str, max_logits: int = 1 << 25,
                 flat_head: bool = False):
        self.loaded = loaded
        self.arrangement = (
            parse_arrangement(arrangement) if isinstance(arrangement, str) else arrangement
        )
        self.max_logits = max_logits
        self.flat_head = flat_head
        self._layouts: dict[int, tuple[torch.Tensor, int]] = {}
        model = loaded.model
        self._body = model.base_model
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        bos = loaded.info.bos_token_id
        if self.arrangement.bos and bos is None:
            raise ProtoscopeError(
                f"arrangement {self.arrangement.spec!r} needs a BOS token, "
                f"and model {loaded.info.name!r} has none"
            )
        self._bos = None if bos is None else loaded.embed(torch.tensor([bos], device=loaded.device))[0]

    def inputs(self, e: torch.Tensor, m: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """`inputs_embeds` [B, L, d] for the arrangement, and the position predicting t_1."""
        batch, n = targets.shape
        slots, first = self._layout(n)
        dtype = self.loaded.dtype
        bos = self._bos if self._bos is not None else torch.zeros_like(e[0])
        pool = [bos.to(e.dtype).expand(batch, -1), e, m]
        if self.arrangement.teacher_forced:
            pool += list(self.loaded.embed(targets).to(e.dtype).unbind(1))
        pool = torch.stack(pool, dim=1)  # [B, 3 (+N), d]
        return pool[:, slots.to(pool.device)].to(dtype), first

    def _layout(self, n: int) -> tuple[torch.Tensor, int]:
        """Slot indices for length n, built once per length (every step reuses them)."""
        if n not in self._layouts:
            slots, first = self.arrangement.layout(n)
            self._layouts[n] = (torch.tensor(slots, device=self.loaded.device), first)
        return self._layouts[n]

    def __call__(
        self, e: torch.Tensor, m: torch.Tensor, targets: torch.Tensor, grad: bool = False
    ) -> Decoded:
        """Decode every problem of the batch in one forward pass of the frozen model."""
        e, m = _batched(e, targets), _batched(m, targets)
        with torch.set_grad_enabled(grad):
            x, first = self.inputs(e, m, targets)
            n = targets.shape[1]
            hidden = self._body(inputs_embeds=x).last_hidden_state[:, first : first + n]
            return self._score(hidden, targets, grad)

    def _score(self, hidden: torch.Tensor, targets: torch.Tensor, grad: bool) -> Decoded:
        batch, n = targets.shape
        vocab = self._head.weight.shape[0]
        chunk = max(1, min(n, self.max_logits // max(1, batch * vocab)))
        losses, preds = [], []
        for start in range(0, n, chunk):
            h, t = hidden[:, start : start + chunk], targets[:, start : start + chunk]
            if grad and chunk < n:
                loss, pred = checkpoint(self._head_loss, h, t, use_reentrant=False)
            else:
                loss, pred = self._head_loss(h, t)
            losses.append(loss)
            preds.append(pred)
        predicted = torch.cat(preds, 1)
        return Decoded(loss=torch.cat(losses, 1), predicted=predicted, correct=predicted == targets)

    def _head_loss(self, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._logits(h)
        loss = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")
        return loss, logits.argmax(-1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, n, d] -> float32 logits [B, n, vocab], soft-capped as the model does."""
        if self.flat_head:
            logits = self._head(h.reshape(-1, h.shape[-1])).view(*h.shape[:-1], -1).float()
        else:
            logits = self._head(h).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    # -- the prompt view ------------------------------------------------------------------------
    def prompt(self, *vectors: torch.Tensor) -> torch.Tensor:
        """`inputs_embeds` [B, K (+1), d] of an ordinary prompt: the model's BOS embedding when
        the arrangement has one, then each vector [B, d] as one position (`[bos] e m`)."""
        parts = [v.to(self.loaded.device) for v in vectors]
        if self.arrangement.bos:
            parts.insert(0, self._bos.expand_as(parts[0]))
        return torch.stack([p.to(self.loaded.dtype) for p in parts], 1)

    @torch.no_grad()
    def greedy(self, prompt: torch.Tensor, n: int,
               banned: list[int] | tuple[int, ...] | None = None) -> torch.Tensor:
        """Greedy continuation [B, n] of the prompt `inputs_embeds` [B, K, d], batched: the
        prompt in one pass, then one position per step on the model's KV cache.

        The continuation is exactly n tokens: `banned` ids are never chosen (the next best is),
        by default the model's end-of-sequence ids, as `generate(min_new_tokens=n)` does.
        """
        banned = self._eos_ids() if banned is None else list(banned)
        name = self._cache_argument()
        out = self._body(inputs_embeds=prompt.to(self.loaded.device), use_cache=True)
        tokens = []
        for step in range(n):
            logits = self._logits(out.last_hidden_state[:, -1:])[:, 0]
            if banned:
                logits[:, banned] = float("-inf")
            tokens.append(logits.argmax(-1))
            if step + 1 < n:
                out = self._body(input_ids=tokens[-1][:, None], use_cache=True,
                                 **{name: getattr(out, name)})
        return torch.stack(tokens, 1)

    def _cache_argument(self) -> str:
        # transformers 5.x renamed `past_key_values` to `cache` (the old name warns).
        names = inspect.signature(self._body.forward).parameters
        return "cache" if "cache" in names else "past_key_values"

    def _eos_ids(self) -> list[int]:
        eos = self.loaded.model.generation_config.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    # -- the attention view ---------------------------------------------------------------------
    @torch.no_grad()
    def attention(self, e: torch.Tensor, m: torch.Tensor, targets: torch.Tensor) -> Attended:
        """Per-layer attention weights that the supervised query positions (those predicting
        t_1 .. t_N) of the one-step input give to every input position."""
        dev = self.loaded.device
        targets = targets.to(dev)
        e, m = _batched(e, targets).to(dev), _batched(m, targets).to(dev)
        x, first = self.inputs(e, m, targets)
        n = targets.shape[1]
        with _eager_attention(self.loaded.model):
            maps = self._body(inputs_embeds=x, output_attentions=True).attentions
        return Attended(weights=tuple(w[:, :, first:first + n] for w in maps),
                        slots=self._layout(n)[0])


@contextlib.contextmanager
def _eager_attention(model):
    """Fused attention kernels (sdpa, flash) return no weights: eager for the block only."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _batched(v: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Accept one vector [d] for the whole batch, or one per problem [B, d]."""
    return v.expand(targets.shape[0], -1) if v.dim() == 1 else v
