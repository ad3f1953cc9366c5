"""Helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from llm_i2i.config import config_hash, to_dict
from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i import BACKBONES, make_backbone
from llm_i2i.i2i.base import Neighbors
from llm_i2i.progress import log


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(BACKBONES), default="swing", help="I2I backbone")
    p.add_argument("--config", help="YAML with the backbone's fields (top level, or under a section named like the model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")


def fit_backbone(args: argparse.Namespace, train: Sequences, valid_targets: np.ndarray | None = None) -> tuple[Neighbors, dict[str, Any]]:
    section = None
    if args.config:
        import yaml
        from pathlib import Path

        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        section = args.model if isinstance(loaded, dict) and args.model in loaded else None
    model = make_backbone(args.model, args.config, args.set, section=section)
    log.info(f"fitting {args.model} on {train.n_users} users, {train.n_items} items, {int(train.indptr[-1])} interactions")
    t0 = time.perf_counter()
    neighbors = model.fit(train, valid_targets)
    seconds = time.perf_counter() - t0
    log.info(f"{args.model} fitted in {seconds:.1f}s")
    info = {
        "backbone": args.model,
        "backbone_config": to_dict(model.config),
        "config_hash": config_hash(model.config),
        "fit_seconds": seconds,
        "fit_report": getattr(model, "report", {}),
    }
    return neighbors, info
