"""Storage roots given as pyarrow filesystem URIs (`s3://bucket/run`, `gs://...`, `file:///...`), and this node's
private cache of what was read from them.

Every process that reads a remote root (the driver, a Ray Train worker, an inference actor, a fit task) copies
what it needs into its OWN node's cache, never into a directory another node would have to see. `fetch_dir`
downloads a remote directory there once per node: under a file lock, into a temp directory renamed into place,
so concurrent workers on one node share one copy and a killed download leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

from llm_i2i.io import locked_build
from llm_i2i.progress import log


def is_uri(root: str | os.PathLike) -> bool:
    return "://" in str(root)


def uri_join(uri: str, *parts: str) -> str:
    """`uri` with path `parts` appended, before any query string (`s3://b/run?endpoint_override=h:p` + `x`
    -> `s3://b/run/x?endpoint_override=h:p`)."""
    head, sep, query = uri.partition("?")
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in parts if p)]) + sep + query


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a URI."""
    return pafs.FileSystem.from_uri(uri)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload_dir(local: Path, fs: pafs.FileSystem, dest: str, last: str | None = None) -> None:
    """Copy the files of `local` to `dest` on `fs`; the file named `last` (a commit marker) goes after the rest."""
    fs.create_dir(dest, recursive=True)
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.name == last):  # stable: `last` moves to the end
        rel = p.relative_to(local).as_posix()
        if "/" in rel:
            fs.create_dir(f"{dest}/{rel.rsplit('/', 1)[0]}", recursive=True)
        pafs.copy_files(str(p), f"{dest}/{rel}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def fetch_dir(fs: pafs.FileSystem, src: str, local: Path, is_current: Callable[[Path], bool]) -> Path:
    """This node's copy of the remote directory `src` at `local`, downloaded unless `is_current(local)` holds.

    One download per node however many workers ask (`locked_build`), into a temp directory that replaces `local`
    only when complete, and must pass `is_current` afterwards (the remote changed under us otherwise)."""

    def download(tmp: Path) -> None:
        log.info(f"fetching {src} into {local}")
        pafs.copy_files(src, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if not is_current(tmp):
            raise ValueError(f"{src} changed while it was being copied to {local} (another run writing it?)")

    return locked_build(local, is_current, download, lock="fetch")


def cache_root() -> Path:
    """This node's cache: `$LLM_I2I_CACHE` (set per node on a cluster whose home directories are shared), else
    the user's cache directory."""
    env = os.environ.get("LLM_I2I_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm_i2i"


def private_cache_dir(uri: str) -> Path:
    """This node's cache of a remote location: `<cache_root()>/remote-<hash of uri>`, mode 0700.

    Under the user's own cache directory, never a predictable name in a shared /tmp that another user could
    create first and fill. Where that directory cannot be used, a fresh `tempfile.mkdtemp` (private, not reused
    across runs).
    """
    base = cache_root()
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        _require_private(base)
        path = base / f"remote-{key}"
        path.mkdir(exist_ok=True, mode=0o700)
        _require_private(path)
        return path
    except OSError as e:
        path = Path(tempfile.mkdtemp(prefix=f"llm_i2i_cache_{key}_"))
        log.warning(f"cache for {uri}: {e}; using the private temp directory {path} (not reused by later runs)")
        return path


def _require_private(path: Path) -> None:
    """A real directory owned by this user, closed to others (tightened to 0700 if it is ours but wider)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path}: not a directory owned by this user (uid {os.getuid()}); refusing to cache "
                              f"artifacts there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
