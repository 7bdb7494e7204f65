"""A small real run store, fitted on a tiny random Llama, for analysis tests.

`tiny_run()` fits 3 texts x 3 seeds at 6 tokens (arrangement `bos e m*`, nothing shared) and
writes them with `RunStore`, once per process (cached; the folder is removed at exit). Texts
t0 and t1 share context c0; t2 has no context. Tests read the store and must not write to it.
The model needs `initializer_range=0.3`: at the default 0.02 a 2-layer model is nearly
insensitive to its input and fitting stalls.

`single_thread()` runs tiny-model work on one CPU thread: a model this small gains nothing
from more, and on a shared machine two OpenMP threads can make each step ~30x slower.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import pathlib
import shutil
import tempfile

import torch

from protoscope.geometry.decoder import Decoder
from protoscope.geometry.fitting import Fitter, Problem
from protoscope.geometry.models import LoadedModel, tiny_model
from protoscope.geometry.recipes import resolve_recipe
from protoscope.geometry.store import RunStore
from protoscope.geometry.texts import Text, tokenize

ARRANGEMENT = "bos e m*"
LENGTH = 6
SEEDS = 3
TEXTS = [  # (text_id, source, context_id, text): more than LENGTH words each
    ("t0", "generated", "c0", "the old man walked to the city in the morning"),
    ("t1", "generated", "c0", "the old woman went to the river in the evening"),
    ("t2", "builtin", None, "money and power are not what people need most today"),
]


@contextlib.contextmanager
def single_thread():
    """Run the body with torch on one thread, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def tiny_loaded() -> LoadedModel:
    """The tiny Llama the run is fitted on (shared: do not modify)."""
    return tiny_model("llama", seed=0, initializer_range=0.3)


@functools.lru_cache(maxsize=None)
def tiny_run(max_steps: int = 300) -> tuple[pathlib.Path, LoadedModel]:
    """Path of the cached tiny run store and the model it was fitted on."""
    loaded = tiny_loaded()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="protoscope-tiny-run-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    texts = [Text(i, s, c, t, tokenize(loaded, t)) for i, s, c, t in TEXTS]
    recipe = resolve_recipe("default", max_steps=max_steps)
    info = loaded.info
    manifest = {"model": {"name": info.name, "source": info.source,
                          "weights_sha256": info.weights_sha256, "family": info.family,
                          "d_model": info.d_model, "vocab_size": info.vocab_size},
                "dtype": "float32", "device": "cpu",
                "config": {"model": info.name, "lengths": [LENGTH], "seeds": SEEDS,
                           "arrangement": ARRANGEMENT, "share": "none", "recipe": recipe.to_dict()},
                "command": ["tests/tiny_run.py"]}
    store = RunStore.create(folder / "run", manifest, texts)
    problems = [Problem(t.text_id, seed, t.prefix(LENGTH)) for t in texts for seed in range(SEEDS)]
    with single_thread():
        groups = Fitter(Decoder(loaded, ARRANGEMENT), recipe, share="none").fit(problems)
    for group in groups:
        store.append([_row(s, recipe.name) for s in group.solutions], group.e, group.m)
    store.update_manifest(status="complete")
    return store.path, loaded


def _row(s, recipe: str) -> dict:
    return {"text_id": s.problem.text_id, "seed": s.problem.seed, "length": LENGTH,
            "arrangement": ARRANGEMENT, "share": "none", "share_group": -1,
            "e_row": s.e_row, "m_row": s.m_row, "accuracy": s.accuracy, "c_tokens": s.c_tokens,
            "loss": s.loss, "steps": s.steps, "restarts": s.restarts, "seconds": s.seconds,
            "converged": s.converged, "status": s.status, "failure": s.failure,
            "init_from": -1, "recipe": recipe, "method": "one-step"}
