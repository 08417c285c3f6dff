# Two commands: `make test` and `make bench`.  Everything else is a helper for them.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.storebench-installed
PYTEST_ARGS ?=

.PHONY: test bench claims venv lint golden lock clean tox-ci

# LitData (the litdata format, Python 3.11 where torch is) declares torchvision, whose only wheel here is
# a CUDA build that fails to import beside the CPU torch: it is installed without its declared
# dependencies; the ones it uses are in pyproject's formats extra.  tox.ini does the same.
NO_DEPS := "litdata ; python_version == '3.11'"

# (Re)install when the project's requirements change; the lock pins every version.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]'
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(NO_DEPS)
	touch $(STAMP)

venv: $(STAMP)

# --benchmark-disable: every benchmark runs once, on tiny sizes, as a smoke test.
# -m "not slow": the long race and fuzz trials run with `pytest -m slow` (or PYTEST_ARGS=).
# The benchmark smoke run takes each format's default options (every variant's bound and
# conformance are in tests/); `make bench` times every variant.
# Two at a time, one per core: the conformance suite beside the other test files, then the
# benchmark smoke run beside lint; the first's output follows the second's, and either failing fails.
COMMA := ,
PAIR = { $(1) > $(2) 2>&1 & pid=$$!; $(3); st=$$?; wait $$pid || st=1; cat $(2); rm -f $(2); exit $$st; }
test: $(STAMP)
	@$(call PAIR,$(BIN)/python -m pytest tests/test_conformance.py --benchmark-disable -m "not slow" $(PYTEST_ARGS),\
		.conformance.log,$(BIN)/python -m pytest tests --ignore=tests/test_conformance.py --benchmark-disable \
		-m "not slow" $(PYTEST_ARGS))
	@$(call PAIR,STOREBENCH_FORMAT_VARIANTS=defaults $(BIN)/python -m pytest bench --benchmark-disable -m "not slow" --store local$(COMMA)s3 \
		$(PYTEST_ARGS),.bench-smoke.log,$(MAKE) lint)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The test suite on the oldest and newest supported Pythons (CI runs this after `make test`),
# the two environments side by side: one core each, half the wall time of one after the other.
# Other Pythons run each format's default options (every bench variant ran on 3.11 in `make test`)
# and the tests whose libraries differ by Python version: formats, fixtures, contract, faults,
# workloads and packaging. The command-line, report, summary, claims, plug-in example and benchmark-harness tests
# (subprocesses of pytest bench, of the CLI and of a plug-in's own pytest; figures) run on 3.11 only, to keep
# CI within its time; so do FormatTests' object-store tests (-k "not object_store": the S3 round trips of every
# format; tests/test_remote.py reads from the S3 endpoint on every Python).
TOX_CI_SKIP := test_bench_support test_cli test_publish test_claims test_summary test_plugin_example
tox-ci: $(STAMP)
	STOREBENCH_FORMAT_VARIANTS=defaults $(BIN)/tox run-parallel -e py310,py313 --parallel 2 --parallel-live -- \
		tests $(foreach t,$(TOX_CI_SKIP),--ignore=tests/$(t).py) -k "not object_store"

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-autosave --benchmark-save-data \
		--benchmark-columns=median,iqr,ops,rounds --benchmark-sort=fullname $(PYTEST_ARGS)

# The notebooks' claims: exactly the benchmark scenarios they need, then claims.md, claims.csv and the
# claims figure in results/claims/ (under 30 minutes here; SCALE=notebook: the notebooks' own sizes).
SCALE ?= default
claims: $(STAMP)
	$(BIN)/storebench run --claims --scale $(SCALE) --out results/claims

# Rewrite the committed golden datasets (only when a format's on-disk layout changes on purpose).
golden: $(STAMP)
	$(BIN)/python tests/make_golden.py $(FORMATS)

# Re-pin constraints.txt for every supported Python (needs network access to the package index).
lock: $(STAMP)
	$(BIN)/python -m pip install -q uv
	cp constraints.txt constraints.txt.tmp  # today's pins are uv's preferences: only new packages move
	$(BIN)/uv pip compile --universal --python-version 3.10 --all-extras --no-header \
		--no-emit-package torch --no-annotate -o constraints.txt.tmp pyproject.toml
	# torch comes from the local CPU wheel, which needs none of the CUDA packages.
	grep -v -E '^(nvidia-|cuda-|triton)' constraints.txt.tmp > constraints.txt
	rm constraints.txt.tmp
	echo 'torch==2.13.0 ; python_version == "3.11"' >> constraints.txt
	echo 'litdata==0.2.76 ; python_version == "3.11"' >> constraints.txt  # NO_DEPS, not in pyproject

clean:
	rm -rf $(VENV) .tox .benchmarks .hypothesis .storebench-data .pytest_cache
