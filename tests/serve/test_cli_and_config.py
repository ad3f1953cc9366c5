"""`llm-i2i serve` argument handling and serve_apps/config.yaml, without starting Ray."""

from pathlib import Path

import pytest
import yaml

from llm_i2i.cli import build_parser, main
from llm_i2i.config import from_dict
from llm_i2i.index.service import ServeConfig
from llm_i2i.index.store import write_index
from tests.index.fixtures import random_neighbors

CONFIG_YAML = Path(__file__).resolve().parents[2] / "serve_apps" / "config.yaml"


def test_corrupt_index_is_refused_before_ray_starts(tmp_path, capsys):
    d = write_index(random_neighbors(0), tmp_path / "idx", {})
    (d / "indptr.npy").unlink()
    assert main(["serve", "--index", str(d)]) == 2
    assert "indptr.npy" in capsys.readouterr().err


def test_cli_flags_override_config_file(tmp_path, monkeypatch):
    from llm_i2i.commands.serve import resolve_config

    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text("serve:\n  index_dir: /a\n  port: 9000\n  max_recent: 50\n")
    monkeypatch.setenv("MY_TOKEN", "xyz")
    args = build_parser().parse_args(["serve", "--config", str(cfg_file), "--index", "/b", "--replicas", "2",
                                      "--set", "default_k=20", "--admin-token-env", "MY_TOKEN"])
    cfg = resolve_config(args)
    assert (cfg.index_dir, cfg.port, cfg.max_recent, cfg.replicas, cfg.default_k, cfg.admin_token, cfg.host) == (
        "/b", 9000, 50, 2, 20, "xyz", "127.0.0.1")
    bad = build_parser().parse_args(["serve", "--index", "/b", "--set", "merge=avg"])
    with pytest.raises(ValueError, match="merge"):
        resolve_config(bad)


def test_config_yaml_is_a_valid_serve_config_matching_serve_config():
    from ray.serve.schema import ServeDeploySchema

    from serve_apps.i2i_app import serve_config

    raw = yaml.safe_load(CONFIG_YAML.read_text())
    ServeDeploySchema.model_validate(raw)
    app = raw["applications"][0]
    cfg = from_dict(ServeConfig, app["args"])
    assert cfg.host == raw["http_options"]["host"] == "127.0.0.1"
    generated = serve_config(ServeConfig(**{**app["args"], "index_dir": "/x"}))["applications"][0]
    assert generated["import_path"] == app["import_path"] and generated["args"] == app["args"]
    assert app["deployments"][0]["user_config"]["index_dir"]  # index_dir lives in user_config (hot-swappable)
    assert "index_dir" not in app["args"]
