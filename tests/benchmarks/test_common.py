"""benchmarks/_common.py: the run record, the json+md result write, the heavy-work lock; and every script that
uses it runs as `python -m benchmarks.<name>` with no sys.path edits."""

import ast
import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import _common

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_result_pages_carry_command_machine_code_version_and_dates(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    record = {**_common.run_record("demo", ["--x", "a b"]), "value": 3}
    stem = _common.write_result("demo", record, "# Demo\n\n" + _common.provenance(record))
    assert stem == tmp_path / "demo"
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["command"] == "python -m benchmarks.demo --x 'a b'" and saved["value"] == 3
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["platform"]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert saved["code_version"].startswith(head or "unknown")
    assert saved["started_utc"] <= saved["finished_utc"] and len(saved["load_average_at_end"]) == 3
    page = (tmp_path / "demo.md").read_text()
    assert page.endswith("\n") and f"code `{saved['code_version']}`" in page and "--x 'a b'" in page
    # an older record (machine as a string, no code version) still renders
    assert "not recorded" in _common.provenance({"command": "c", "machine": "x86_64", "finished_utc": "2026-01-01"})


def _held(path: Path) -> bool:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_heavy_lock_excludes_others_and_accepts_an_inherited_flock(tmp_path):
    lock = tmp_path / "heavy.lock"
    env = {"LLM_I2I_HEAVY_LOCK": str(lock), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfrom benchmarks._common import heavy_lock\n"
                              "with heavy_lock():\n    print('in', flush=True)\n    sys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "in"
        assert _held(lock)
    finally:
        child.communicate("\n", timeout=60)
    assert not _held(lock)
    # started under `flock LOCK ...`, the script must not wait for the lock its own parent holds
    out = subprocess.run(["flock", str(lock), sys.executable, "-c",
                          "from benchmarks._common import heavy_lock\nwith heavy_lock():\n    print('ran')"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "ran", out.stderr
    # --help measures nothing: it answers at once while another job holds the lock
    holder = subprocess.Popen(["flock", str(lock), "sleep", "60"])
    try:
        while not _held(lock):
            time.sleep(0.05)
        out = subprocess.run([sys.executable, "-m", "benchmarks.disc_pretrained_slice", "--help"], capture_output=True,
                             text=True, env=env, cwd=REPO, timeout=60)
        assert out.returncode == 0 and "usage:" in out.stdout and "waiting" not in out.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_sys_path_edits(script):
    tree = ast.parse(script.read_text())
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    edits = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
             and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    if edits and "benchmarks._common" not in imports:
        pytest.skip(f"{script.name} is not on benchmarks._common yet (sys.path at lines {edits})")
    assert not edits, f"{script.name}: sys.path used at lines {edits}"


def test_converted_scripts_run_as_modules(tmp_path):
    """`python -m benchmarks.<name> --help` for every script on _common, in one interpreter (imports are the cost)."""
    names = [p.stem for p in SCRIPTS if "benchmarks._common" in p.read_text()]
    code = ("import importlib, sys\nfor n in sys.argv[1:]:\n    m = importlib.import_module('benchmarks.' + n)\n"
            "    try:\n        m.main(['--help'])\n    except SystemExit as e:\n        assert e.code == 0, (n, e.code)\n"
            "    print('ok', n)\n")
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("ok ")] == names


def test_labelled_paths_split_at_the_last_equals_sign():
    import argparse

    from benchmarks._common import labelled_path

    assert labelled_path("alpha=4=/runs/a4") == ("alpha=4", "/runs/a4")
    assert labelled_path("Beauty=/work/runs/b") == ("Beauty", "/work/runs/b")
    for bad in ("/runs/a4", "=/runs/a4", "label="):
        with pytest.raises(argparse.ArgumentTypeError, match="LABEL=PATH"):
            labelled_path(bad)
