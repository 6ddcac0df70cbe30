# Two commands on a fresh machine (Python 3.11, make, git):
#   make run    the whole platform on embedded NATS and PostgreSQL
#   make test   ruff, then the whole test suite on real servers
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.8

.PHONY: install run test bench soak lint format typecheck lock export clean help browser redis k8s-dev-keys

help:
	@echo "make run | make test | make bench | make lint | make format | make typecheck | make lock | make export"

# The environment is rebuilt only when the lock file or pyproject change.
$(VENV)/.installed: requirements.lock requirements-runtime.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cityhall needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing from requirements.lock into $(VENV)…"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r requirements.lock
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(VENV)/.installed

# `make run TRACES=1`: with the local trace store and its web UI (docs/operations.md, "Traces").
run: install
	$(BIN)/cityhall up $(if $(TRACES),--traces)

test: install lint typecheck browser redis
	$(BIN)/pytest

# The performance suite (reports, never gates): one line per figure, under 10 minutes.
bench: install
	$(BIN)/python bench/run.py

# The reliability scenarios at full length (make test runs them short): 50,000 events.
soak: install
	RELIABILITY_EVENTS=50000 RELIABILITY_PG_OUTAGES=10,60 HYPOTHESIS_PROFILE=soak SCHEMATHESIS_EXAMPLES=100 $(BIN)/pytest -s tests/reliability tests/security tests/integration/test_properties_ledger.py tests/integration/test_properties_outbox_inbox.py tests/unit/test_properties_contracts.py

# Reporting's dashboard test drives Debian's headless Chromium; CI machines may lack it.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)

# The shared rate-limit counts' test starts a redis-server of the machine's (Debian's package).
redis:
	@command -v redis-server >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends redis-server)

# Dead code ([tool.vulture] in pyproject.toml): unused variables and attributes are left out,
# as vulture cannot tell them from pydantic and dataclass fields; functions, classes, methods,
# properties and imports nobody uses fail the lint.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@out=$$($(BIN)/vulture); rc=$$?; [ $$rc -le 3 ] || { echo "$$out"; exit $$rc; }; \
	dead=$$(echo "$$out" | grep -v -e "unused variable" -e "unused attribute"); \
	[ -z "$$dead" ] || { echo "$$dead"; echo "dead code: remove it or, if a framework, a template or a test calls it, name it in vulture_whitelist.py"; exit 1; }

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy services cityhall contracts bench

# Re-pin every dependency (after editing pyproject.toml): requirements.lock is what a developer
# and CI install (runtime + the local stack's embedded servers + the test tools);
# requirements-runtime.lock is what the container image installs (runtime only).
lock: install
	$(UV) pip compile pyproject.toml --extra local --extra dev --python-version 3.11 \
		--generate-hashes --quiet -o requirements.lock
	$(UV) pip compile pyproject.toml --python-version 3.11 --generate-hashes \
		--quiet -o requirements-runtime.lock

export: install
	$(BIN)/cityhall contracts export

# The dev overlay's NATS identities (deploy/k8s/overlays/dev/nats-keys, never committed): the
# services' and the operator's nkey seeds and the users the NATS servers admit.
k8s-dev-keys: install
	$(BIN)/cityhall nats keys deploy/k8s/overlays/dev/nats-keys
	$(BIN)/cityhall nats users --keys deploy/k8s/overlays/dev/nats-keys \
		--out deploy/k8s/overlays/dev/nats-keys/auth.conf

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
