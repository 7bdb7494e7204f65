"""A small real run store, fitted on a tiny random Llama, for analysis tests.

`tiny_run()` fits 3 texts x 3 seeds at 6 tokens (arrangement `bos e m*`, nothing shared) with
`fit_run`, the sequence the CLI and the demo use, once per process (cached; the folder is
removed at exit). Texts t0 and t1 share context c0; t2 has no context. Tests read the store and must not write to it.
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

from protoscope.geometry.models.loading import LoadedModel, tiny_model
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.runs.fit import RunConfig, fit_run
from protoscope.geometry.store.texts import Text, tokenize

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
    config = RunConfig(model=loaded.info.name, texts="tiny-run", seeds=SEEDS, lengths=(LENGTH,),
                       arrangement=ARRANGEMENT, recipe=resolve_recipe("default", max_steps=max_steps))
    with single_thread():
        store = fit_run(folder / "run", config, loaded=loaded, texts=texts).store
    return store.path, loaded



def cli_fitted_run(root: pathlib.Path, paragraphs: list[str]) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A saved tiny Llama, a text file of `paragraphs` and a 4-token, 2-seed run of them fitted
    through the command line in `root/run`: (root, model folder, text file)."""
    from protoscope.cli import main
    from protoscope.geometry.models.loading import save_tiny_model

    model = save_tiny_model(root / "model", "llama", seed=0, initializer_range=0.3)
    texts = root / "t.txt"
    texts.write_text("\n\n".join(paragraphs) + "\n")
    assert main(["fit", "--model", str(model), "--texts", str(texts), "--length", "4", "--seeds", "2",
                 "--out", str(root / "run"), "--max-steps", "150", "--quiet"]) == 0
    return root, model, texts
