"""`llm-i2i serve` argument handling and serve_apps/config.yaml, without starting Ray."""

from pathlib import Path

import pytest
import yaml

from llm_i2i.cli import build_parser, main
from llm_i2i.config import from_dict, to_dict
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
    args = build_parser().parse_args(["serve", "--config", str(cfg_file), "--index", "/b", "--replicas", "2",
                                      "--set", "default_k=20", "--admin-token-env", "MY_TOKEN"])
    cfg = resolve_config(args)
    assert (cfg.index_dir, cfg.port, cfg.max_recent, cfg.replicas, cfg.default_k, cfg.admin_token_env, cfg.host) == (
        "/b", 9000, 50, 2, 20, "MY_TOKEN", "127.0.0.1")
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
    generated = serve_config(ServeConfig(**{**app["args"], "index_dir": "/x/index"}))["applications"][0]
    assert generated["import_path"] == app["import_path"]
    assert generated["args"] == {**app["args"], "index_roots": [str(Path(r).resolve()) for r in app["args"]["index_roots"]]}
    assert serve_config(ServeConfig(index_dir="/x/index"))["applications"][0]["args"]["index_roots"] == ["/x"]
    assert app["deployments"][0]["user_config"]["index_dir"]  # index_dir lives in user_config (hot-swappable)
    assert "index_dir" not in app["args"]


def test_admin_token_never_enters_the_serve_config(monkeypatch):
    """Issue 18: on main `llm-i2i serve` copied $LLM_I2I_ADMIN_TOKEN into the application args (`serve config`)."""
    from llm_i2i.commands.serve import resolve_config
    from serve_apps.i2i_app import serve_config

    monkeypatch.setenv("LLM_I2I_ADMIN_TOKEN", "sup3r-secret-value")
    cfg = resolve_config(build_parser().parse_args(["serve", "--index", "/b/index"]))
    doc = serve_config(cfg)
    assert "sup3r-secret-value" not in repr(doc) and "sup3r-secret-value" not in repr(to_dict(cfg))
    assert doc["applications"][0]["args"]["admin_token_env"] == "LLM_I2I_ADMIN_TOKEN"


def test_backpressure_and_timeouts_are_configured():
    """Issue 18: no queue limit and no request timeout were set on main."""
    from serve_apps.i2i_app import build_app, serve_config

    cfg = ServeConfig(index_dir="/x/index", max_queued_requests=7, max_ongoing_requests=9, request_timeout_s=3.0)
    assert serve_config(cfg)["http_options"]["request_timeout_s"] == 3.0
    deployment = build_app(serve_config(cfg)["applications"][0]["args"])._bound_deployment
    assert (deployment.max_queued_requests, deployment.max_ongoing_requests) == (7, 9)
    with pytest.raises(ValueError, match="body_timeout_s"):
        ServeConfig(body_timeout_s=0).validate()
