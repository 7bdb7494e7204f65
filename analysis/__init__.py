"""The four questions protoscope answers about a run's solutions, one module each.

Each module exposes `analyze(store, loaded, **options) -> dict[str, pandas.DataFrame]`: it reads
the run store, re-evaluates vectors only through the shared decoder, and returns tidy tables by
name; `run_analyses` writes them to RUN/analysis/NAME.parquet. Nothing here plots.
"""
