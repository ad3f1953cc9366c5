"""Helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Iterable, TypeVar

import numpy as np
import yaml

from llm_i2i.config import config_hash, load_config, to_dict
from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i import BACKBONES, make_backbone
from llm_i2i.i2i.base import Neighbors
from llm_i2i.progress import log

C = TypeVar("C")


def config_section(path: str | None, name: str) -> str | None:
    """`name` when the YAML file has a top-level section of that name, else None (the file's top level is the
    config): one `--config` file can hold every command's section, or be one command's config alone."""
    if not path:
        return None
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError:
        return None  # load_config reports it, naming the file
    return name if isinstance(loaded, dict) and name in loaded else None


def load_command_config(cls: type[C], args: argparse.Namespace, section: str, overrides: Iterable[str] = ()) -> C:
    """A command's typed config: defaults <- `--config` (its `section`, or its top level) <- `overrides` <- `--set`."""
    return load_config(cls, args.config, [*overrides, *args.set], section=config_section(args.config, section))


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(BACKBONES), default="swing", help="I2I backbone")
    p.add_argument("--config", help="YAML with the backbone's fields (top level, or under a section named like the model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")


def fit_backbone(args: argparse.Namespace, train: Sequences, valid_targets: np.ndarray | None = None,
                 runner: Any = None, n_real: np.ndarray | None = None) -> tuple[Neighbors, dict[str, Any]]:
    """Fit the chosen backbone; `runner` is a sharded path for backbones that take one (Swing); `n_real`: real
    items per user when the rest are synthetic (`I2IModel.fit`)."""
    model = make_backbone(args.model, args.config, args.set, section=config_section(args.config, args.model))
    if runner is not None:
        model.runner = runner
    log.info(f"fitting {args.model} on {train.n_users} users, {train.n_items} items, {int(train.indptr[-1])} interactions")
    t0 = time.perf_counter()
    neighbors = model.fit(train, valid_targets, n_real)
    seconds = time.perf_counter() - t0
    log.info(f"{args.model} fitted in {seconds:.1f}s")
    info = {
        "backbone": args.model,
        "backbone_config": to_dict(model.config),
        "config_hash": config_hash(model.config),
        "fit_seconds": seconds,
        "fit_report": getattr(model, "report", {}),
        "synthetic_interactions": 0 if n_real is None else int(train.indptr[-1] - n_real.sum()),
    }
    return neighbors, info
