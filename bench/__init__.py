"""Benchmarks: how fast and how reliably does protoscope find proto-token solutions?

Each module answers one question and returns plain data; `run.py` strings them together into
`make bench-quick` / `make bench`, writes `bench/results/<name>.json` and prints a table.
See bench/README.md for what each number means and how it is counted.
"""
