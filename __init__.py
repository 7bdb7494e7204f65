"""protoscope: the geometry of proto-token solutions for one-step text generation.

A frozen causal LM emits a whole text in one forward pass when its input is two trained
vectors laid out as [e, m, m, ..., m]. protoscope fits many such solutions and measures the
space they live in. `geometry` fits and evaluates, `analysis` measures, `reports` shows.
"""

__version__ = "0.1.0"
