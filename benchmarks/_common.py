"""What every benchmark shares: the run record (command, machine, code version, load), one JSON + Markdown
result write, and the heavy-work lock.

Run a benchmark from the repository root as `python -m benchmarks.<name> [args]`: the package import needs no
`sys.path` edits. Timed work takes the machine's heavy-work lock (`heavy_lock`, a `flock` on the file named by
$LLM_I2I_HEAVY_LOCK, default /tmp/llm_i2i_heavy.lock) so two measurements never share the cores; starting a
script under `flock LOCKFILE python -m benchmarks.<name>` works too (the inherited lock is recognised).
Every result page opens with `provenance(record)`: the command, the code version, the machine and the date.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA_ROOT = REPO.parent / "shared" / "data"  # the datasets beside the checkout (../shared/data)
LOCK_ENV = "LLM_I2I_HEAVY_LOCK"
DEFAULT_LOCK = "/tmp/llm_i2i_heavy.lock"


def machine_info() -> dict[str, Any]:
    """The machine a figure was measured on. The GPU is named only when torch is already imported (this never
    imports torch: a CPU benchmark should not pay for it)."""
    cpu = platform.processor() or platform.machine()
    ram_gib = None
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
        kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        ram_gib = round(kib / 2**20, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": cpu, "cores": cores, "ram_gib": ram_gib, "platform": platform.platform(),
                            "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def code_version() -> str:
    """Short commit of the code that ran, `+dirty` when tracked files differ from it; $LLM_I2I_CODE_VERSION where
    the code travelled without its git history (a device machine gets a copy of the tree); else `unknown`."""
    if os.environ.get("LLM_I2I_CODE_VERSION"):
        return os.environ["LLM_I2I_CODE_VERSION"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_line(name: str, argv: Sequence[str] | None = None) -> str:
    """How to rerun it, from the repository root."""
    return shlex.join(["python", "-m", f"benchmarks.{name}", *(sys.argv[1:] if argv is None else argv)])


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def labelled_path(spec: str) -> tuple[str, str]:
    """argparse `type` of a LABEL=PATH argument, split at the last '=': a label may hold one (alpha=4), a path not."""
    label, sep, path = spec.rpartition("=")
    if not (sep and label and path):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected LABEL=PATH")
    return label, path


def run_record(name: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The start of every result JSON: command, machine, code version, start time and load (the machine is shared)."""
    return {"command": command_line(name, argv), "code_version": code_version(), "machine": machine_info(),
            "started_utc": utc_now(), "load_average_at_start": list(os.getloadavg())}


def provenance(record: dict[str, Any]) -> str:
    """The line a result page opens with. Records written before this module (a machine string, no code
    version) still render: results are re-rendered from their JSON."""
    m = record["machine"]
    if isinstance(m, dict):
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
        m = f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB{gpu}, {m['platform']}"
    when = (record.get("started_utc") or record.get("finished_utc", "?")).rstrip("Z")
    load = record.get("load_average_at_start")
    load_note = f", 1-min load {load[0]:.1f} at start (the machine may be shared)" if load else ""
    return (f"Command: `{record['command']}` · code `{record.get('code_version', 'not recorded')}` · machine: {m} · "
            f"{when} UTC{load_note}.")


def write_result(stem: str | Path, record: dict[str, Any], markdown: str) -> Path:
    """Write STEM.json (the record, with its finish time and load) and STEM.md, each whole or not at all.
    A bare name goes under benchmarks/results/. Safe to call again as a long run progresses."""
    from llm_i2i.io import write_json, write_text

    stem = Path(stem)
    if stem.parent == Path("."):
        stem = RESULTS / stem
    record["finished_utc"] = utc_now()
    record["load_average_at_end"] = list(os.getloadavg())
    write_json(record, stem.with_name(stem.name + ".json"))
    write_text(markdown.rstrip("\n") + "\n", stem.with_name(stem.name + ".md"))
    return stem


def _lock_inherited(path: str) -> bool:
    """True when this process already has the lock file open: started under `flock LOCKFILE ...`."""
    real = os.path.realpath(path)
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == real:
                    return True
    return False


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Hold the machine's heavy-work lock for the block; waits (and says so) while another job holds it."""
    path = os.environ.get(LOCK_ENV, DEFAULT_LOCK)
    if _lock_inherited(path):
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the heavy-work lock {path} (another benchmark or heavy job runs)", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_locked(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """`raise SystemExit(run_locked(main))`: a benchmark's entry point, under the heavy-work lock (not for --help,
    which measures nothing and should not wait behind a heavy job)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "-h" in args or "--help" in args:
        return main(argv)
    with heavy_lock():
        return main(argv)
