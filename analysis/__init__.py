"""The questions protoscope answers about a run's solutions, one module each.

Each module exposes `analyze(store, loaded, **options) -> dict[str, pandas.DataFrame]`: it reads
the run store, re-evaluates vectors only through the shared decoder, and returns tidy tables by
name; `run_analyses` writes them to RUN/analysis/NAME.parquet (a `geometry.store.runstore.Tensors` entry,
such as connectivity's trained curves, to NAME.safetensors). Its keyword options are the
analysis's budget (`options.py` puts them on the command line and in the manifest's stamp).
Each module also holds `VERSION`, an integer in that stamp: bump it when a change alters the
analysis's numbers, so `analyze` recomputes its tables (and only its) on runs analysed before.
`findings.py` turns the tables into the run's answers. Nothing here plots.
"""
