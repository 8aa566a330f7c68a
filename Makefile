# Every target builds (or reuses) the CPU stack first: see env/setup_cpu_stack.py.
# PROFILE=latest runs against the newest vLLM instead of the one vllm-ascend pairs with.
SHELL := /bin/bash
PROFILE ?= $(or $(COOKBOOK_STACK_PROFILE),paired)
RUN := COOKBOOK_STACK_PROFILE=$(PROFILE) env/with-stack

.PHONY: stack demo test unit notebooks lint docs clean

stack:            ## build or reuse the CPU stack; prints its path
	COOKBOOK_STACK_PROFILE=$(PROFILE) bash env/setup-cpu-stack.sh

demo:             ## the main job: notebook 01 on the tiny checkpoint, answer printed
	$(RUN) python -m cookbook demo

test:             ## lint, type check, unit + engine + server tests, every notebook
	$(RUN) ruff check cookbook tests env
	$(RUN) ruff format --check cookbook tests env
	$(RUN) mypy
	$(RUN) python -m pytest -q
	$(RUN) python -m cookbook run-notebooks --profile cpu --out build/notebooks

unit:             ## fast tests only (no engine, no server, no notebook)
	$(RUN) python -m pytest -q -m "not vllm and not server and not notebook"

notebooks:        ## execute and check every notebook on the CPU
	$(RUN) python -m cookbook run-notebooks --profile cpu --out build/notebooks

lint:
	$(RUN) ruff check cookbook tests env
	$(RUN) ruff format --check cookbook tests env
	$(RUN) mypy

clean:
	rm -rf build .pytest_cache .mypy_cache
