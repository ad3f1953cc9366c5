"""The throughput table gpu_llm and llm_inference share: ratios against the reference of the same run."""

from benchmarks.llm_inference import throughput_table


def test_ratios_are_against_the_reference_and_failures_are_kept():
    res = {"ref": {"generate_users_per_s": 10.0, "discriminate_pairs_per_s": 40.0, "error_rows": 0},
           "fast": {"generate_users_per_s": 25.0, "discriminate_pairs_per_s": 20.0, "error_rows": 3},
           "broken": {"error": "ImportError: no vllm"}}
    lines = throughput_table(res, "ref")
    assert (res["fast"]["generate_ratio_vs_reference"], res["fast"]["discriminate_ratio_vs_reference"]) == (2.5, 0.5)
    assert res["ref"]["generate_ratio_vs_reference"] == 1.0 and "generate_ratio_vs_reference" not in res["broken"]
    assert lines[2:] == ["| ref | 10.0 | 1.00 | 40.0 | 1.00 | 0 |", "| fast | 25.0 | 2.50 | 20.0 | 0.50 | 3 |",
                         "| broken | failed: ImportError: no vllm | | | | |"]
