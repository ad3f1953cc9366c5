"""benchmarks/scoring_batches.py: its arguments are checked, and a setting that was killed (an OOM) is a row, not a
crash."""

import argparse

import pytest

from benchmarks.scoring_batches import parse_caps, parse_case, render


def test_case_and_caps_arguments_parse_or_name_the_problem():
    assert parse_case("titles=a/ckpt::b/data") == ("titles", ("a/ckpt", "b/data"), None)
    assert parse_case("titles=a/ckpt::b/data::80") == ("titles", ("a/ckpt", "b/data"), 80)
    assert parse_caps("512:16384") == (512, 16384)
    for bad in ("titles=a/ckpt", "a/ckpt::b/data", "titles=a/ckpt::b/data::many"):
        with pytest.raises(argparse.ArgumentTypeError, match="CHECKPOINT::DATASET|LABEL=PATH"):
            parse_case(bad)
    for bad in ("512", "0:10", "8:0", "x:y"):
        with pytest.raises(argparse.ArgumentTypeError, match="PROMPTS"):
            parse_caps(bad)


def test_a_killed_setting_renders_as_a_row_with_its_reason():
    ok = {"case": "t", "users": 500, "prompts": 32, "tokens": 16384, "pairs": 1000, "seconds": 2.0, "rss_loaded_mib": 600.0,
          "peak_rss_mib": 1100.0, "max_abs_diff": 0.0}
    record = {"command": "x", "machine": "m", "started_utc": "2026-12-07 19:00", "rounds": 2, "reference_rev": "r",
              "rows": [{"case": "t", "users": 500, "prompts": 512, "tokens": 0, "failed": "exit -9: "}, ok]}
    page = render(record)
    assert "| t | 500 | 512:- | - | - | - | - | exit -9:  |" in page
    assert "| t | 500 | 32:16384 | 1,000 | 500 | 500 | 1,100 | 0.0e+00 |" in page
