"""The house's import rules, checked on every import in the source, including those inside functions and
`importlib.import_module("...")` / `__import__("...")` with a literal name:

1. the algorithm core (llm_i2i/data, i2i, eval, index) imports no ray, ray_jobs, serve_apps or benchmarks;
2. nothing in llm_i2i below the command line (llm_i2i/cli.py, llm_i2i/commands/) imports ray_jobs, serve_apps or
   benchmarks: the library takes a runner, ray_jobs supplies the Ray one;
3. ray_jobs and serve_apps never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("llm_i2i/data/", "llm_i2i/i2i/", "llm_i2i/eval/", "llm_i2i/index/")
COMMAND_LINE = ("llm_i2i/cli.py", "llm_i2i/commands/")
RULES = [  # (applies to a file, top-level packages it must not import); the first rule that applies decides
    (lambda f: f.startswith(CORE), {"ray", "ray_jobs", "serve_apps", "benchmarks"}),
    (lambda f: f.startswith("llm_i2i/") and not f.startswith(COMMAND_LINE), {"ray_jobs", "serve_apps", "benchmarks"}),
    (lambda f: f.startswith("ray_jobs/"), {"serve_apps"}),
    (lambda f: f.startswith("serve_apps/"), {"ray_jobs"}),
]
DYNAMIC = ("import_module", "__import__")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, wherever it sits; relative imports are left out (they stay
    inside their own package)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in DYNAMIC
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(files: dict[str, str]) -> list[str]:
    """'file:line imports module' for every import that breaks a rule; `files` maps repo paths to source."""
    bad = []
    for rel, source in sorted(files.items()):
        banned = next((b for applies, b in RULES if applies(rel)), set())
        bad += [f"{rel}:{line} imports {mod}" for line, mod in imported_modules(source) if mod.split(".")[0] in banned]
    return bad


def source_files() -> dict[str, str]:
    out = {}
    for top in ("llm_i2i", "ray_jobs", "serve_apps", "benchmarks"):
        for path in (ROOT / top).rglob("*.py"):
            out[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return out


@pytest.mark.parametrize("source, expected", [
    ("import ray\n", ["ray"]),
    ("def f():\n    from ray_jobs.batch_inference import map_with_engine\n", ["ray_jobs.batch_inference"]),
    ("import importlib\nm = importlib.import_module('serve_apps.i2i_app')\n", ["importlib", "serve_apps.i2i_app"]),
    ("x = __import__('benchmarks')\n", ["benchmarks"]),
    ("from . import sibling\nfrom .x import y\n", []),
])
def test_every_kind_of_import_is_seen(source, expected):
    assert [m for _, m in imported_modules(source)] == expected


def test_the_rules_catch_what_they_forbid_and_allow_the_command_line():
    files = {
        "llm_i2i/i2i/swing.py": "def f():\n    import ray.data\n",
        "llm_i2i/llm/generate.py": "import importlib\nimportlib.import_module('ray_jobs.x')\n",
        "llm_i2i/pipeline/jobs.py": "import ray\n",  # Ray itself is fine outside the core
        "llm_i2i/commands/run.py": "from ray_jobs.runners import run_pipeline_job\n",
        "ray_jobs/x.py": "from serve_apps import app\n",
        "serve_apps/y.py": "import ray_jobs\n",
    }
    assert violations(files) == ["llm_i2i/i2i/swing.py:2 imports ray.data", "llm_i2i/llm/generate.py:2 imports ray_jobs.x",
                                 "ray_jobs/x.py:1 imports serve_apps", "serve_apps/y.py:1 imports ray_jobs"]


def test_the_source_keeps_the_layering_rules():
    bad = violations(source_files())
    assert not bad, "imports that break the layering rules:\n" + "\n".join(bad)
