"""What does an end-to-end encoder compute from a text? Its network, for training and for use.

The `mlp` kind's shape in torch (features -> one hidden ReLU layer -> [e, m]), each output
rescaled to a learned norm (log-parametrised), optionally conditioned on the target length.
encoder.py predicts with it and end_to_end.py trains it; neither imports the other for it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ProtoscopeError


def forward(t: dict[str, torch.Tensor], x: torch.Tensor, d: int,
            lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features [k, f] (float32) -> e [k, d], m [k, d]: the encoder, for training and use.

    A length-conditioned encoder (tensors `w_len`, `len_norm`) also takes each text's target
    length in tokens: `length_feature(n)` enters the hidden layer through `w_len` and moves the
    log-norms of e and m through `len_norm`. Encoders without them ignore `lengths`."""
    xs = (x - t["x_mean"]) / t["x_scale"]
    pre = xs @ t["w0"] + t["b0"]
    log_e, log_m = t["log_e_norm"], t["log_m_norm"]
    if "w_len" in t:
        if lengths is None:
            raise ProtoscopeError("this encoder is length-conditioned: it needs each text's length")
        f = length_feature(lengths).to(pre)[:, None]  # [k, 1]
        pre = pre + f * t["w_len"]
        log_e, log_m = log_e + f * t["len_norm"][0], log_m + f * t["len_norm"][1]
    h = torch.relu(pre)
    y = (h @ t["w1"] + t["b1"]) * t["y_scale"] + t["y_mean"]
    return _to_norm(y[:, :d], log_e), _to_norm(y[:, d:], log_m)


def length_feature(lengths) -> torch.Tensor:
    """(log2 n - 4) / 2: 0 at 16 tokens, 0.5 at 32, 1 at 64, -0.5 at 8."""
    n = torch.as_tensor(lengths, dtype=torch.float32)
    return (torch.log2(n) - 4.0) / 2.0


def _to_norm(v: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    return v * (log_norm.exp() / v.norm(dim=1, keepdim=True).clamp(min=1e-12))


def predict(tensors: dict[str, torch.Tensor], features: np.ndarray, d: int,
            lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return forward(tensors, torch.from_numpy(np.asarray(features)).float(), d,
                       None if lengths is None else torch.as_tensor(lengths))


def length_conditioned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` with the length parameters added as zeros (the same function at every length)
    when they have none: a start for training an encoder that serves several lengths."""
    if "w_len" in tensors:
        return dict(tensors)
    return {**tensors, "w_len": torch.zeros_like(tensors["b0"]), "len_norm": torch.zeros(2)}
