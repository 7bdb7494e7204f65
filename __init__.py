"""protoscope: the geometry of proto-token solutions for one-step text generation.

A frozen causal LM emits a whole text in one forward pass when its input is two trained
vectors laid out as [e, m, m, ..., m]. protoscope fits many such solutions and measures the
space they live in. `geometry` fits and evaluates, `analysis` measures, `reports` shows, and
`workflows` strings them together; the command line and this API call the same steps:

    import protoscope as ps
    run = ps.fit("runs/x", 16, texts="builtin:3", seeds=2)
    ps.analyze(run, only=["connectivity"], options={"connectivity": {"bezier_steps": 50}})
    run.findings
    ps.report(run)

Every name below is loaded on first use, so `import protoscope` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> (module, attribute): the public API (docs/api.md)
_API = {
    "fit": ("workflows.pipeline", "fit"),
    "capacity": ("workflows.pipeline", "capacity"),
    "analyze": ("workflows.pipeline", "analyze"),
    "report": ("workflows.pipeline", "report"),
    "compare": ("workflows.pipeline", "compare"),
    "open_run": ("workflows.pipeline", "open_run"),
    "Run": ("workflows.pipeline", "Run"),
    "train_encoder": ("workflows.pipeline", "train_encoder"),
    "train_universal_m": ("workflows.pipeline", "train_universal_m"),
    "describe": ("workflows.pipeline", "options_text"),  # every option of a step (`protoscope options`)
    "study": ("workflows.studies", "run"),
    "demo": ("workflows.studies", "demo"),
    "sweep": ("workflows.sweep", "sweep"),
    "ProtoscopeError": ("geometry.errors", "ProtoscopeError"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'protoscope' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
