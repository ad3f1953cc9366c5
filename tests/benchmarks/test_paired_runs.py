"""benchmarks/paired_runs.py: the paired statistics, and runs on different data are refused."""

import json

import numpy as np
import pytest

from benchmarks.paired_runs import compare, paired


def test_paired_counts_discordant_users_and_brackets_the_difference():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    b = np.array([1, 0, 1, 1, 1, 0, 1, 1], bool)
    r = paired(a, b, np.random.default_rng(0), 500)
    assert (r["only_a"], r["only_b"]) == (1, 3)  # users 1 / users 2, 3, 7
    assert r["mcnemar_z"] == pytest.approx(2 / np.sqrt(4))
    assert r["difference"] == pytest.approx((6 - 4) / 8) and r["relative"] == pytest.approx(0.5)
    assert r["ci95"][0] <= r["difference"] <= r["ci95"][1]
    same = paired(a, a, np.random.default_rng(0), 50)
    assert same["mcnemar_z"] == 0.0 and same["ci95"] == [0.0, 0.0]


def test_runs_on_different_prepared_data_are_refused(tmp_path):
    for name, digest in (("a", "1"), ("b", "2")):
        (tmp_path / name / "prepare").mkdir(parents=True)
        (tmp_path / name / "prepare" / "manifest.json").write_text(json.dumps({"files": {"x": {"sha256": digest}}}))
    with pytest.raises(SystemExit, match="different prepared datasets"):
        compare(tmp_path / "a", tmp_path / "b", 10, 10, 0)
