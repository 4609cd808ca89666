# shopbayes: `make report` runs the whole analysis, `make test` the tests.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
CLIENTS ?= 104989
# the one-click case reads the real public files when they sit beside the project
# (../shared/data/one_click), else its synthetic stand-in in data/demo_one_click
ONE_CLICK_DATA ?= $(wildcard ../shared/data/one_click)
RUN_ENV := SHOPBAYES_ONE_CLICK_DATA=$(ONE_CLICK_DATA)

.PHONY: install data run report test test-slow test-all bench lint clean-results

install: $(STAMP)

# the `crosscheck` group (bambi) is installed only for the runs that use it: bambi brings
# arviz-base/-stats/-plots, which `import arviz` then loads (3.4 s in every process).
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is
# set (as on these machines) no process does either, so every process (each test worker,
# step, background task and CLI call) compiled PyMC, PyTensor and scikit-learn from their
# sources: `import analysis.steps.propensity` took 14.6 s, 5.9 s with the bytecode (34 s
# once, at install)
SYNC := $(PY) -m uv sync --frozen --all-extras --compile-bytecode --python $(PY)

# the Makefile too: a change of the install command reinstalls
$(STAMP): pyproject.toml uv.lock Makefile
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet "uv>=0.5"
	$(SYNC)
	@touch $(STAMP)

data: install
	$(RUN_ENV) $(BIN)/shopbayes demo-data --if-needed --out data/demo --clients $(CLIENTS)

run: data
	$(RUN_ENV) $(BIN)/shopbayes run

# a failed step still gets a report (with a warning box); make then exits non-zero
report: data
	@status=0; $(RUN_ENV) $(BIN)/shopbayes run || status=$$?; \
	$(BIN)/shopbayes report && echo "Open report/_site/index.html (and one_click.html, apparel.html; PDFs beside them)"; \
	exit $$status

# the tests run in TEST_JOBS processes (pytest-xdist; a module's tests stay together, so
# module fixtures such as the Spark session start once; each process's OpenMP code on one
# thread, tests/conftest.py): 6 min 33 s on a fresh clone on 2 cores with the bytecode
# compiled (2026-12-02; 7 min 34 s to 7 min 56 s before)
TEST_JOBS ?= 2
XDIST := -n $(TEST_JOBS) --dist loadscope

test: install
	$(BIN)/python -m pytest $(XDIST)

test-slow: install
	$(SYNC) --group crosscheck
	@status=0; $(BIN)/python -m pytest $(XDIST) -m slow || status=$$?; $(SYNC); exit $$status

test-all: install
	$(SYNC) --group crosscheck
	@status=0; $(BIN)/python -m pytest $(XDIST) -m "slow or not slow" || status=$$?; $(SYNC); exit $$status

bench: install
	$(SYNC) --group crosscheck
	@status=0; $(BIN)/python benchmarks/run.py || status=$$?; $(SYNC); exit $$status

lint: install
	$(BIN)/ruff check .

clean-results:
	rm -rf data/results
