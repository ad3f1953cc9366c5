from dataclasses import dataclass

import pytest

from llm_i2i.config import ConfigError, config_hash, load_config, parse_overrides
from llm_i2i.i2i.swing import SwingConfig


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("swing:\n  alpha1: 5\n  beta: 0.5\n")
    cfg = load_config(SwingConfig, p, ["beta=0.25", "k=50"], section="swing")
    assert (cfg.alpha1, cfg.beta, cfg.k) == (5.0, 0.25, 50)
    assert load_config(SwingConfig, None, ["alpha1=2e-3"]).alpha1 == 0.002  # YAML reads this as a string
    assert config_hash(cfg) != config_hash(SwingConfig())


def test_unknown_field_and_bad_type_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['alpha3'\]"):
        load_config(SwingConfig, None, ["alpha3=1"])
    with pytest.raises(ConfigError, match=r"SwingConfig\.k: expected int"):
        load_config(SwingConfig, None, ["k=many"])
    with pytest.raises(ConfigError, match=r"SwingConfig\.beta: expected float"):
        load_config(SwingConfig, None, ["beta=high"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["k"])


def test_nested_and_tuple_fields():
    @dataclass
    class Inner:
        x: int = 1

    @dataclass
    class Outer:
        inner: Inner
        ks: tuple[int, ...] = (1,)

    cfg = load_config(Outer, None, {"inner": {"x": 3}, "ks": [5, 10]})
    assert cfg.inner.x == 3 and cfg.ks == (5, 10)


def test_knobs_added_later_stay_out_of_the_key_at_their_default():
    """A nested config's UNKEYED_AT_DEFAULT fields vanish from result_config at their default (artifacts cached
    before they existed stay valid) and are keyed as soon as they are set."""
    from dataclasses import field

    from llm_i2i.config import result_config

    @dataclass
    class Inner:
        width: int = 8
        new_knob: int = 0
        UNKEYED_AT_DEFAULT = ("new_knob",)

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        threads: int = 2
        EXECUTION_ONLY = ("threads",)

    assert result_config(Outer()) == {"inner": {"width": 8}}
    assert result_config(Outer(Inner(new_knob=3))) == {"inner": {"width": 8, "new_knob": 3}}
    assert config_hash(result_config(Outer())) != config_hash(result_config(Outer(Inner(new_knob=3))))
