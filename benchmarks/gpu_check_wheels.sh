#!/usr/bin/env bash
# Fill .whl/ (gitignored) with what benchmarks/gpu_check.py needs on a GPU machine that has torch, transformers
# and numpy but no network and no project install: DeepSpeed as a pure-Python wheel (its ops are JIT-built where
# they run), the dependencies of it that such an image lacks, and pyarrow. Wheels for CPython 3.12 on x86-64 Linux.
# Then, on that machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD DS_ACCELERATOR=cuda python3 -m benchmarks.gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pyarrow==26.0.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 hjson==3.1.0
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
du -ch .whl/*.whl | tail -1   # with the tree, what travels must stay under 64 MiB
