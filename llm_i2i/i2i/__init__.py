"""I2I backbones behind one interface (`I2IModel.fit(train) -> Neighbors`), looked up by name."""

from __future__ import annotations

import importlib
from typing import Any, Iterable, Mapping

from llm_i2i.config import load_config
from llm_i2i.i2i.base import I2IModel, Neighbors

# name -> (module, model class, config class); imported lazily so Swing needs no torch import.
BACKBONES: dict[str, tuple[str, str, str]] = {
    "swing": ("llm_i2i.i2i.swing", "Swing", "SwingConfig"),
    "bm25": ("llm_i2i.i2i.bm25", "BM25", "BM25Config"),
    "bpr": ("llm_i2i.i2i.bpr", "BPR", "BPRConfig"),
    "youtubednn": ("llm_i2i.i2i.youtubednn", "YoutubeDNN", "YoutubeDNNConfig"),
}


def backbone_classes(name: str) -> tuple[type[I2IModel], type]:
    if name not in BACKBONES:
        raise ValueError(f"unknown I2I model {name!r}; choose from {sorted(BACKBONES)}")
    mod, cls, cfg = BACKBONES[name]
    m = importlib.import_module(mod)
    return getattr(m, cls), getattr(m, cfg)


def make_backbone(
    name: str, config_file: str | None = None, overrides: Iterable[str] | Mapping[str, Any] = (), section: str | None = None
) -> I2IModel:
    """Build a backbone from defaults <- YAML (optionally a section of it) <- `key=value` overrides."""
    model_cls, cfg_cls = backbone_classes(name)
    return model_cls(load_config(cfg_cls, config_file, overrides, section=section))


__all__ = ["BACKBONES", "I2IModel", "Neighbors", "backbone_classes", "make_backbone"]
