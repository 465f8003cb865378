# The two commands: `make demo` and `make test`. Each sets itself up on a fresh machine
# (virtual environment, CPU build of torch where there is no GPU, the package and its extras)
# and is fast once set up: the install is redone only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch 2.13.0 is the CPU build on this project's machines; with a GPU, pip picks a CUDA build.
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_GPU_SPEC ?= torch>=2.3
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC := $(if $(HAS_GPU),$(TORCH_GPU_SPEC),$(TORCH_CPU_SPEC))
STAMP := $(VENV)/.installed
# KaTeX, which typesets the docs' math at build time (docs/hooks/katex.py), from the npm registry at
# the version docs/hooks/package-lock.json pins; npm writes this file last.
KATEX := docs/hooks/node_modules/.package-lock.json

PACKAGE_DIR := build/package-check

.PHONY: demo test lint unit notebooks docs bench setup clean package

setup: $(STAMP) $(KATEX)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c 'import torch' 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,notebooks,docs]"
	@touch $(STAMP)

$(KATEX): docs/hooks/package.json docs/hooks/package-lock.json
	@command -v npm >/dev/null || { echo "The docs build needs Node.js and npm: apt-get install -y nodejs npm"; exit 1; }
	npm ci --prefix docs/hooks --no-audit --no-fund --ignore-scripts --loglevel=error

demo: $(STAMP)
	$(VENV)/bin/survae-flowify train --preset demo

lint: $(STAMP)
	$(PY) -m ruff check survae_flowify tests benchmarks docs/hooks .ci

unit: $(STAMP) $(KATEX)
	$(PY) -m pytest -q

notebooks: $(STAMP)
	$(PY) -m pytest --nbmake -q notebooks

docs: $(STAMP) $(KATEX)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

test: lint unit notebooks docs

# The wheel as a user gets it: built, installed (not editable) into a fresh environment beside the
# CPU torch, checked for its licence, typing marker and version, and its command run from there.
package: $(PY)
	rm -rf $(PACKAGE_DIR)
	$(PIP) wheel -q --no-deps -w $(PACKAGE_DIR)/dist .
	$(PYTHON) -m venv $(PACKAGE_DIR)/venv
	$(PACKAGE_DIR)/venv/bin/python -m pip install -q --upgrade pip
	$(PACKAGE_DIR)/venv/bin/python -m pip install -q "$(TORCH_CPU_SPEC)"
	$(PACKAGE_DIR)/venv/bin/python -m pip install -q $(PACKAGE_DIR)/dist/survae_flowify-*.whl
	cd $(PACKAGE_DIR) && venv/bin/python $(CURDIR)/.ci/check_install.py
	cd $(PACKAGE_DIR) && venv/bin/survae-flowify list

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .hypothesis docs/hooks/node_modules $(PACKAGE_DIR)
