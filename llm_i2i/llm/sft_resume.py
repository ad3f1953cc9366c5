"""SFT resume state: one format for the in-process and the Ray/DeepSpeed loop, committed as one unit.

A state is a directory `state_<commit number>/` under the run's resume root holding
- `model.safetensors`: the full weights (rank 0; ZeRO stages <= 2 keep full weights on every rank),
- `best.safetensors`: the best epoch's weights so far (hard-linked from the previous state when unchanged),
- `optimizer.rank<r>.safetensors`: each rank's optimizer tensors, its scalars as JSON in the file's metadata,
- `state.json`: position (epoch, step in epoch, global step), run key, world size, dtype, history,
- `COMPLETE.json`: written last, naming every file with its size.
It is built in `.state_<n>.tmp`, every file fsynced, then renamed into place; readers take the newest directory
whose marker matches its files, so a process killed mid-save resumes from the previous state. safetensors and
JSON only, never pickle.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs
import torch

from llm_i2i.progress import log
from llm_i2i.uri import exists, fetch_dir, filesystem, private_cache_dir, upload_dir, uri_join

MARKER = "COMPLETE.json"
STATE = "state.json"
MODEL = "model.safetensors"
BEST = "best.safetensors"


def weights_of(model) -> dict[str, torch.Tensor]:
    """The model's tensors on CPU, copied (DeepSpeed keeps them as views of flat buffers); a tied head is left out."""
    tied = model.config.tie_word_embeddings
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
            if not (tied and k == "lm_head.weight")}


def load_weights(model, tensors: dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"{where}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()


def flatten_optimizer_state(state: dict[int, dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torch optimizer's per-parameter state as (`<pid>.<key>` tensors, scalars)."""
    tensors, scalars = {}, {}
    for pid, st in state.items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, scalars


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[int, dict[str, Any]]:
    per: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *scalars.items()]:
        pid, k = key.split(".", 1)
        per.setdefault(int(pid), {})[k] = v
    return per


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    _fsync(path)


def _number_of(d: Path) -> int:
    return int(d.name.split("_", 1)[1])


def _complete(d: Path) -> bool:
    try:
        marker = json.loads((d / MARKER).read_text())
        return all((d / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError):
        return False


@dataclass
class Resumed:
    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]]
    best: dict[str, torch.Tensor] | None


class ResumeStore:
    """The resume states of one run for one rank of `world`; `barrier` syncs the ranks (a no-op for one)."""

    def __init__(self, root: str | Path, run_key: str, rank: int = 0, world: int = 1,
                 barrier: Callable[[], None] = lambda: None):
        self.root, self.run_key, self.rank, self.world, self.barrier = Path(root), run_key, rank, world, barrier

    def latest(self) -> Path | None:
        """The newest complete state, or None."""
        found = sorted((d for d in self.root.glob("state_*") if d.is_dir()), key=_number_of, reverse=True)
        return next((d for d in found if _complete(d)), None)

    def load(self, dtype: str) -> Resumed | None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        d = self.latest()
        if d is None:
            return None
        state = json.loads((d / STATE).read_text())
        for key, want in (("run_key", self.run_key), ("world_size", self.world), ("dtype", dtype)):
            if state[key] != want:
                raise ValueError(f"{d}: resume state has {key}={state[key]!r}, this run {want!r}; delete {self.root} "
                                 "to start over")
        opt_path = d / f"optimizer.rank{self.rank}.safetensors"
        with safe_open(str(opt_path), "pt") as f:
            scalars = json.loads(f.metadata()["scalars"])
        best = load_file(str(d / BEST)) if self.rank == 0 and (d / BEST).exists() else None
        return Resumed(d, state, load_file(str(d / MODEL)), (load_file(str(opt_path)), scalars), best)

    def commit(self, state: dict[str, Any], model_weights: dict[str, torch.Tensor] | None,
               optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]],
               best: dict[str, torch.Tensor] | None, best_changed: bool) -> Path:
        """Write this rank's part of a new state; rank 0 passes the weights and commits. Every rank calls it at the
        same point, after the previous commit, so all see the same directory listing on entry."""
        number = max((_number_of(d) for d in self.root.glob("state_*")), default=0) + 1
        final, tmp = self.root / f"state_{number:09d}", self.root / f".state_{number:09d}.tmp"
        previous = self.latest()
        if self.rank == 0:
            for stale in self.root.glob(".state_*.tmp"):
                shutil.rmtree(stale)
            tmp.mkdir(parents=True)
        self.barrier()
        tensors, scalars = optimizer
        _save_tensors(tensors, tmp / f"optimizer.rank{self.rank}.safetensors", {"scalars": json.dumps(scalars)})
        if self.rank == 0:
            _save_tensors(model_weights, tmp / MODEL)
            if best is not None and (best_changed or previous is None or not (previous / BEST).exists()):
                _save_tensors(best, tmp / BEST)
            elif best is not None:
                os.link(previous / BEST, tmp / BEST)
            (tmp / STATE).write_text(json.dumps({**state, "run_key": self.run_key, "world_size": self.world}))
            _fsync(tmp / STATE)
        self.barrier()
        if self.rank == 0:
            files = {p.name: p.stat().st_size for p in tmp.iterdir()}
            (tmp / MARKER).write_text(json.dumps({"files": files}))
            _fsync(tmp / MARKER)
            _fsync(tmp)
            os.replace(tmp, final)
            _fsync(self.root)
            for old in self.root.glob("state_*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
            log.debug(f"resume state committed: {final}")
        self.barrier()
        return final


class RemoteResumeStore(ResumeStore):
    """The same states under a URI (`<shared work>/states`), for ranks on nodes that share no disk.

    Each rank writes its files into its node-local `root` and uploads them to `<remote>/state_<n>/`; once all
    have, rank 0 uploads `COMPLETE.json` naming every rank's file with its size, then deletes the older states.
    A state without a marker that matches its files (a commit cut short) is never read. `latest` downloads, from
    the newest complete state, the files this rank reads into `root`, which is this rank's alone (it is cleared)."""

    def __init__(self, remote: str, root: str | Path, run_key: str, rank: int = 0, world: int = 1,
                 barrier: Callable[[], None] = lambda: None):
        super().__init__(root, run_key, rank, world, barrier)
        self.fs, self.base = filesystem(remote)

    def _states(self) -> list[str]:
        """Remote state directory names, newest first."""
        if not exists(self.fs, self.base):
            return []
        names = [i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.base))
                 if i.type == pafs.FileType.Directory and i.base_name.startswith("state_")]
        return sorted(names, key=lambda n: int(n.split("_", 1)[1]), reverse=True)

    def _complete_remote(self, name: str) -> bool:
        try:
            with self.fs.open_input_stream(f"{self.base}/{name}/{MARKER}") as f:
                files = json.loads(f.read().decode())["files"]
            return all(self.fs.get_file_info(f"{self.base}/{name}/{n}").size == size for n, size in files.items())
        except (OSError, ValueError, KeyError):
            return False

    def _latest_remote(self) -> str | None:
        return next((n for n in self._states() if self._complete_remote(n)), None)

    def latest(self) -> Path | None:
        name = self._latest_remote()
        if name is None:
            return None
        local = self.root / name
        if not _complete(local):
            shutil.rmtree(self.root, ignore_errors=True)
            tmp = self.root / f".{name}.rank{self.rank}.tmp"
            tmp.mkdir(parents=True)
            wanted = [STATE, MODEL, f"optimizer.rank{self.rank}.safetensors", MARKER]
            if self.rank == 0:
                wanted.append(BEST)
            for n in wanted:
                src = f"{self.base}/{name}/{n}"
                if n == BEST and self.fs.get_file_info(src).type == pafs.FileType.NotFound:
                    continue
                pafs.copy_files(src, str(tmp / n), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())
            marker = json.loads((tmp / MARKER).read_text())  # this rank's files only: what `_complete` checks here
            (tmp / MARKER).write_text(json.dumps({"files": {n: s for n, s in marker["files"].items()
                                                            if (tmp / n).exists()}}))
            os.replace(tmp, local)
        return local

    def commit(self, state: dict[str, Any], model_weights: dict[str, torch.Tensor] | None,
               optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]],
               best: dict[str, torch.Tensor] | None, best_changed: bool) -> str:
        states = self._states()
        number = max((int(n.split("_", 1)[1]) for n in states), default=0) + 1
        previous = self._latest_remote()
        reuse_best = previous is not None and exists(self.fs, f"{self.base}/{previous}/{BEST}")
        self.barrier()  # every rank chose `number` before any rank creates it
        name = f"state_{number:09d}"
        dest = f"{self.base}/{name}"
        tmp = self.root / f".{name}.rank{self.rank}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors, scalars = optimizer
        _save_tensors(tensors, tmp / f"optimizer.rank{self.rank}.safetensors", {"scalars": json.dumps(scalars)})
        if self.rank == 0:
            _save_tensors(model_weights, tmp / MODEL)
            if best is not None and (best_changed or not reuse_best):
                _save_tensors(best, tmp / BEST)
            (tmp / STATE).write_text(json.dumps({**state, "run_key": self.run_key, "world_size": self.world}))
        self.fs.create_dir(dest, recursive=True)
        for p in tmp.iterdir():
            pafs.copy_files(str(p), f"{dest}/{p.name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
        if self.rank == 0 and best is not None and not best_changed and reuse_best:
            self.fs.copy_file(f"{self.base}/{previous}/{BEST}", f"{dest}/{BEST}")
        shutil.rmtree(tmp)
        self.barrier()
        if self.rank == 0:
            files = {i.base_name: i.size for i in self.fs.get_file_info(pafs.FileSelector(dest))}
            with self.fs.open_output_stream(f"{dest}/{MARKER}") as f:
                f.write(json.dumps({"files": files}).encode())
            for old in states:
                self.fs.delete_dir(f"{self.base}/{old}")
            log.debug(f"resume state committed: {dest}")
        self.barrier()
        return dest


class SharedWork:
    """An SFT run's shared directory on a URI root (`<root>/_work/<stage>-<key>`), for workers on nodes that share
    no disk: `run_key.json` (written last), `tokenizer/` (built once by the driver), `states/` (the resume states,
    `RemoteResumeStore`) and `model/` (the finished checkpoint, uploaded by rank 0, its manifest last)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.base = filesystem(uri)

    @property
    def states_uri(self) -> str:
        return uri_join(self.uri, "states")

    def _key(self) -> str | None:
        if not exists(self.fs, f"{self.base}/run_key.json"):
            return None
        with self.fs.open_input_stream(f"{self.base}/run_key.json") as f:
            return json.loads(f.read().decode()).get("run_key")

    def publish(self, tokenizer_dir: Path, run_key: str) -> None:
        """Driver: the tokenizer for this run key (another key's leftovers are removed first)."""
        key = self._key()
        if key == run_key:
            return
        if exists(self.fs, self.base):
            self.fs.delete_dir(self.base)
        upload_dir(tokenizer_dir, self.fs, f"{self.base}/tokenizer")
        with self.fs.open_output_stream(f"{self.base}/run_key.json") as f:
            f.write(json.dumps({"run_key": run_key}).encode())

    def local_dir(self) -> Path:
        """This node's scratch for the run: `<node cache>/remote-<hash of uri>`, with the tokenizer fetched."""
        local = private_cache_dir(self.uri)
        fetch_dir(self.fs, f"{self.base}/tokenizer", local / "tokenizer", lambda d: d.is_dir())
        return local

    def upload_model(self, out_dir: Path, manifest_name: str) -> None:
        """Rank 0: the finished checkpoint, its manifest (the commit marker) last."""
        if exists(self.fs, f"{self.base}/model"):
            self.fs.delete_dir(f"{self.base}/model")
        upload_dir(out_dir, self.fs, f"{self.base}/model", last=manifest_name)

    def fetch_model(self, out_dir: Path, run_key: str, manifest_name: str) -> bool:
        """Driver: the checkpoint of this run key into `out_dir`, if the workers finished one."""
        def finished(d: Path) -> bool:
            m = d / manifest_name
            return m.exists() and json.loads(m.read_text()).get("run_key") == run_key

        remote = f"{self.base}/model/{manifest_name}"
        if not exists(self.fs, remote):
            return False
        with self.fs.open_input_stream(remote) as f:
            if json.loads(f.read().decode()).get("run_key") != run_key:
                return False
        fetch_dir(self.fs, f"{self.base}/model", out_dir, finished)
        return True

    def drop_states(self) -> None:
        if exists(self.fs, f"{self.base}/states"):
            self.fs.delete_dir(f"{self.base}/states")
