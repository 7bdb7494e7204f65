"""What does the frozen model emit, in one forward pass, for a batch of proto-token vectors?

The one mechanism every stage shares: fitting, interpolation paths, Bezier curves,
perturbation sweeps and capacity search all evaluate vectors here. Given e [B, d], m [B, d], the
arrangement and target ids [B, N], it builds `inputs_embeds`, runs the model once, and returns
per-position loss (nats), argmax and correctness. Logits are never materialised for more than
`max_logits` entries at once: the head runs over chunks of positions, and under autograd each
chunk is checkpointed so its logits are recomputed in the backward pass instead of kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .arrangements import Arrangement, parse_arrangement
from .errors import ProtoscopeError


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


class Decoder:
    """Evaluates batches of proto-token vectors against target ids on one frozen model."""

    def __init__(self, loaded, arrangement: Arrangement | str, max_logits: int = 1 << 25):
        self.loaded = loaded
        self.arrangement = (
            parse_arrangement(arrangement) if isinstance(arrangement, str) else arrangement
        )
        self.max_logits = max_logits
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
        logits = self._head(h).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        loss = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")
        return loss, logits.argmax(-1)


def _batched(v: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Accept one vector [d] for the whole batch, or one per problem [B, d]."""
    return v.expand(targets.shape[0], -1) if v.dim() == 1 else v
