# Two commands for a new machine: `make dev` and `make test`. Both build .venv from the
# hash-pinned lock first. uv is installed into .venv with pip when the machine has none.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-from-lock
UV = $$(command -v uv || echo $(BIN)/uv)

.PHONY: dev test lint format bench soak lock clean

# The project itself goes in last, editable (code edits need no reinstall), without its
# dependencies and with the locked hatchling: everything installed is hash-checked. Bytecode is
# compiled at install (packages and app/), so a command run by hand does not compile its imports
# each time it starts (`replicator check` imports 877 modules: 4.0 s instead of 8.0 s on a busy
# machine where PYTHONDONTWRITEBYTECODE is set).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@command -v uv >/dev/null 2>&1 || test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	@$(UV) pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode \
		-r requirements.lock
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@$(BIN)/python -m compileall -q app
	@touch $@

# Stop it with Ctrl-C, or from a script with SIGTERM to make's pid (`make dev & ... kill $!`):
# make passes SIGTERM on to its recipe, never SIGINT (docs/development.md).
dev: $(STAMP)  ## the service on :8000 with moto (:9000), fake-gcs-server (:4443) and demo data
	@$(BIN)/python -m app.dev

# The suite runs on three pytest-xdist workers, each with its own emulators (session fixtures on
# free ports). Whole files go to one worker (--dist loadfile): module-scoped workers and queues
# then serve their tests in file order, as in a serial run. One worker more than the two cores,
# because many tests wait on processes. At 1,187 tests the suite took 269 s on a quiet machine,
# CPU-bound (473 s of CPU); with botocore's data parsed once a process and the tests' polls made
# cheap, 1,200 tests (resume of check and enqueue added) took 199 s and 314 s of CPU on a quiet
# machine (load 3.3 at the start). Four workers were no faster: 339 s against 351 s, with 343 s
# of CPU against 314 s (one run each, load 5-13).
test: lint  ## lint, type-check and the whole test suite
	$(BIN)/pytest -n 3 --dist loadfile

lint: $(STAMP)  ## ruff check, ruff format --check and mypy: what pre-commit and CI run
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## throughput and memory, side by side with rclone
	@$(BIN)/python -m benchmarks

soak: $(STAMP)  ## the whole system for SOAK_SECONDS (600) under churn and faults, then checked
	@$(BIN)/python -m soak

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(STAMP)  ## re-resolve requirements.lock (hash-pinned), keeping its pins; UPGRADE=1 takes newer ones
	$(UV) pip compile pyproject.toml --group dev --universal --generate-hashes --no-header --quiet \
		$(if $(UPGRADE),--upgrade,) -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
