"""How do e and m become the model's input? One table of arrangements, named by short specs.

An arrangement maps a target length N to a sequence of input *slots* and says which output
position predicts the first target token t_1; the positions after it predict t_2 .. t_N in order.
Slots are `bos` (the model's own embedding of its BOS token: a real first token), `e`, `m`, and
`tok` (the embedding of a target token, for the autoregressive [mem] baseline, where the input is
the memory vector followed by the text itself under teacher forcing).

Specs (PAPER.md, Table 1; DESIGN.md):
    e m*        e then N-1 copies of m; e's own output predicts t_1 (the paper's scheme)
    e m*+1      e then N copies of m; e's output is not supervised, the first m predicts t_1
    e*          one vector only, N copies of e
    e*/2 m*/2   ceil(N/2) copies of e, then floor(N/2) copies of m
    (e m)*      e and m alternating
    mem         one trained [mem] vector (stored as e), then t_1 .. t_{N-1} (Kuratov et al.)
Any spec may be preceded by `bos ` to put the model's BOS token in front (e.g. `bos e m*`).
A new arrangement is one entry in LAYOUTS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..errors import ProtoscopeError

DEFAULT_ARRANGEMENT = "bos e m*"  # the arrangement a fit uses unless told otherwise

SLOT_BOS, SLOT_E, SLOT_M = 0, 1, 2
"""Indices of the fixed slots; a `tok` slot holding target j is encoded as TOKEN_BASE + j."""
TOKEN_BASE = 3

# body spec -> (N -> slot names, index of the position predicting t_1)
LAYOUTS: dict[str, Callable[[int], tuple[list[str], int]]] = {
    "e m*": lambda n: (["e"] + ["m"] * (n - 1), 0),
    "e m*+1": lambda n: (["e"] + ["m"] * n, 1),
    "e*": lambda n: (["e"] * n, 0),
    "e*/2 m*/2": lambda n: (["e"] * math.ceil(n / 2) + ["m"] * (n // 2), 0),
    "(e m)*": lambda n: ((["e", "m"] * n)[:n], 0),
    "mem": lambda n: (["e"] + ["tok"] * (n - 1), 0),
}


@dataclass(frozen=True)
class Arrangement:
    """A parsed arrangement spec; `layout(n)` gives the slot indices for a target length n."""

    spec: str
    body: str
    bos: bool

    @property
    def uses(self) -> frozenset[str]:
        """Which trained vectors appear in the input (the others get no gradient)."""
        names, _ = LAYOUTS[self.body](2)
        return frozenset(s for s in names if s in ("e", "m"))

    @property
    def teacher_forced(self) -> bool:
        """True when the input holds the target tokens themselves (the [mem] baseline)."""
        return self.body == "mem"

    def layout(self, n: int) -> tuple[list[int], int]:
        """Slot indices of the input sequence and the position whose output predicts t_1."""
        if n < 1:
            raise ProtoscopeError(f"target length must be at least 1, got {n}")
        names, first = LAYOUTS[self.body](n)
        slots, token = [], 0
        for name in names:
            if name == "tok":
                slots.append(TOKEN_BASE + token)
                token += 1
            else:
                slots.append({"e": SLOT_E, "m": SLOT_M}[name])
        if self.bos:
            slots, first = [SLOT_BOS] + slots, first + 1
        return slots, first

    def input_length(self, n: int) -> int:
        """Length of the input sequence for n target tokens (what must fit the context)."""
        return len(self.layout(n)[0])

    def __str__(self) -> str:
        return self.spec


def parse_arrangement(spec: str) -> Arrangement:
    """Parse a spec such as `bos e m*`; an unknown spec names the allowed ones."""
    words = " ".join(str(spec).split())
    bos = words.startswith("bos ")
    body = words[4:] if bos else words
    if body not in LAYOUTS:
        allowed = ", ".join(f"'{k}'" for k in LAYOUTS)
        raise ProtoscopeError(
            f"unknown arrangement {spec!r}: allowed are {allowed}, each optionally preceded by 'bos '"
        )
    return Arrangement(spec=words, body=body, bos=bos)
