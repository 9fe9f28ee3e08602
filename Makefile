# Two commands work on a fresh machine with Python 3.10+: `make demo` and `make test`.
# Both create .venv on first use and install the provider with Airflow into it.

PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
# Airflow 3.1.x declares structlog>=25.4 with no upper bound, but its logging setup imports
# structlog.dev.Styles, which structlog 26.1 no longer has. Airflow's constraints file pins structlog;
# without it, 3.1.x needs structlog below 25.5 (25.4.0 was tested).
airflow_pins = $(if $(filter 3.1.%,$(1)),"structlog<25.5")

.PHONY: venv demo test lint matrix bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "pip is missing for $(PYTHON)"; exit 1; }
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(PYTHON) -m uv venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install --quiet --python $(BIN)/python "apache-airflow==$(AIRFLOW_VERSION)" $(call airflow_pins,$(AIRFLOW_VERSION)) -e ".[test]"
	touch $(STAMP)

# API_GENERATION=v1 or agents runs the demo against that PolyAI API generation.
# SCENARIO=campaign runs the campaign example (calling windows, pacing, summary) instead.
demo: venv
	POLYAI_API_GENERATION=$(API_GENERATION) POLYAI_DEMO_SCENARIO=$(SCENARIO) $(BIN)/python scripts/demo.py

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Static checks: ruff for style and bugs, mypy for types. Both are installed by the test extra.
lint: venv
	$(BIN)/python -m ruff check airflow_provider_polyai tests scripts benchmarks
	$(BIN)/python -m mypy airflow_provider_polyai

# Oldest supported and current Airflow 3, each on the oldest and newest Python it supports here.
# Each pair gets its own venv under .venv-matrix/ and runs the tests not marked slow (no browser, no build).
# A Python is found on PATH as pythonX.Y, else under pyenv; a missing one fails the target.
MATRIX ?= 3.1.1:3.10 3.1.1:3.13 3.3.2:3.10 3.3.2:3.13
MATRIX_PYTEST_ARGS ?= -q -p no:cacheprovider -m "not slow" --ignore=tests/ui

matrix:
	@failed=; for pair in $(MATRIX); do \
	  af=$${pair%%:*}; py=$${pair##*:}; \
	  interp=; for cand in $$(command -v python$$py) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$py.*/bin/python$$py 2>/dev/null); do \
	    if "$$cand" -V >/dev/null 2>&1; then interp=$$cand; break; fi; \
	  done; \
	  if [ -z "$$interp" ]; then echo "matrix: no Python $$py found (PATH or pyenv)"; failed="$$failed $$pair"; continue; fi; \
	  env=.venv-matrix/af$$af-py$$py; \
	  echo "== Airflow $$af on $$($$interp -V) in $$env"; \
	  $(PYTHON) -m uv venv --quiet --allow-existing --python "$$interp" $$env \
	    && $(PYTHON) -m uv pip install --quiet --python $$env/bin/python "apache-airflow==$$af" $$(case $$af in 3.1.*) echo "structlog<25.5";; esac) -e ".[test]" \
	    && $$env/bin/python -m pytest $(MATRIX_PYTEST_ARGS) || failed="$$failed $$pair"; \
	done; \
	if [ -n "$$failed" ]; then echo "matrix: FAILED (airflow:python):$$failed"; exit 1; fi; \
	echo "matrix: all pairs passed: $(MATRIX)"

# Polling cost of the triggers against the local server, about 8 minutes on 2 CPUs; see benchmarks/RESULTS.md.
bench: venv
	$(PYTHON) -m uv pip install --quiet --python $(BIN)/python -e ".[bench]"
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-matrix .demo .pytest_cache .hypothesis build dist *.egg-info
