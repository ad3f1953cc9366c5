"""benchmarks/disc_tried.py gathers every discriminator run from the records it is given, and pipeline_stages
computes the discriminator's share from a report's ablations."""

import json

from benchmarks import disc_tried, pipeline_stages


def _quality_run(auc: float, seconds: float) -> dict:
    return {"config": {"neg_ratio": 1, "positions_per_user": 3, "epochs": 1, "negatives": "random"},
            "training": {"train_seconds": seconds, "tokens": 10, "best_epoch": 1},
            "valid_auc_random": auc, "valid_auc_hard": 1 - auc}


def _report(full: float, wo_disc: float) -> dict:
    r10 = {"recall@10": 0.1, "long_tail": {"recall@10": 0.0}}
    lifted = {"recall@10": full, "long_tail": {"recall@10": 0.0}}
    return {"stages": {"sft_discriminator": {"seconds": 7.0, "status_this_run": "ran"}},
            "backbones": {"swing": {"baseline": r10, "llm_i2i": lifted}}, "dataset": {"name": "Toys"},
            "synthetic_pairs": {"generated": 10, "kept": 4, "threshold": 0.5}, "discriminator_auc": 0.7,
            "ablations": {"llm_i2i": {"recall@10": full}, "wo_discriminator": {"recall@10": wo_disc}}}


def test_every_discriminator_run_becomes_one_point_and_the_page_names_the_best(tmp_path):
    quality = {"results": [{"dataset": "Beauty", "runs": {"generator_a4": {"config": {}, "training": {}},
                                                          "d1": _quality_run(0.7, 100), "d2": _quality_run(0.8, 50)}}]}
    pipelines = {"runs": {"run": pipeline_stages.summary(_report(0.12, 0.10)),
                          "reused": {**pipeline_stages.summary(_report(0.1, 0.1)),
                                     "stages": {"sft_discriminator": {"seconds": 1.0, "reused": True}}}}}
    paths = []
    for name, rec in (("q.json", quality), ("p.json", pipelines)):
        (tmp_path / name).write_text(json.dumps(rec))
        paths.append(str(tmp_path / name))
    features = {"results": {"Toys": {"run": {"combined": {disc_tried.CEILING_COMBINATION: {"mlp_test_auc": 0.84}}}},
                            "Beauty": {"random": {}}}}  # no run for Beauty: no ceiling
    (tmp_path / "f.json").write_text(json.dumps(features))
    out = tmp_path / "page" / "tried"
    assert disc_tried.main(["--quality", paths[0], "--pipelines", paths[1], "--ceiling", str(tmp_path / "f.json"),
                            "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    # the generator run and the reused stage are not discriminator trainings of their own
    assert sorted(p["label"] for p in points) == ["d1", "d2", "run"]
    run = next(p for p in points if p["label"] == "run")
    assert run["dataset"] == "Toys" and abs(run["share"] - 0.2) < 1e-12 and run["seconds"] == 7.0
    assert abs(run["lift"] - 0.2) < 1e-12  # Swing 0.10 -> 0.12: a share is read beside the whole method's lift
    page = out.with_suffix(".md").read_text()
    assert "**0.800** (Beauty, d2)" in page
    assert "**+20.0%** (Toys, run; the Swing R@10 lift of that run: +20.0%)" in page
    assert "an MLP fit on validation, test ROC-AUC): Toys 0.840." in page
    assert out.with_name("tried.png").stat().st_size > 0


def test_share_is_absent_without_the_ablation():
    report = _report(0.1, 0.1)
    del report["ablations"]
    assert pipeline_stages.summary(report)["discriminator_share"] is None


def test_slice_points_name_the_slice_size_so_two_slices_stay_apart():
    def record(users: int) -> dict:
        return {"dataset": "Beauty", "users": users,
                "variants": {"scratch": {"auc_random": 0.5, "auc_hard": 0.5, "train_seconds": 3.0, "tokens": 9}}}
    points = disc_tried.slice_points(record(500), "a") + disc_tried.slice_points(record(2000), "b")
    assert [p["dataset"] for p in points] == ["Beauty slice of 500 users", "Beauty slice of 2,000 users"]
    assert points[1]["seconds"] == 3.0 and points[1]["auc_random"] == 0.5


def test_pipeline_stages_reads_the_generators_epochs_and_its_recall_alone(tmp_path):
    run = tmp_path / "run"
    report = _report(0.12, 0.10)
    report["ablations"]["wo_i2i"] = {"recall@10": 0.09, "long_tail": {"recall@10": 0.04}}
    report["discriminator"] = {"auc": {"random": 0.7, "hard": 0.45, "candidates_test": 0.64}}
    (run / "sft_generator" / "model").mkdir(parents=True)
    (run / "report.json").write_text(json.dumps(report))
    history = [{"epoch": e} for e in range(1, 19)]
    (run / "sft_generator" / "model" / "llm_i2i_manifest.json").write_text(
        json.dumps({"training": {"history": history, "best_epoch": 15}, "sft_config": {"epochs": 20}}))
    reused = tmp_path / "reused"
    reused.mkdir()
    (reused / "report.json").write_text(json.dumps(_report(0.1, 0.1)))
    out = tmp_path / "page"
    assert pipeline_stages.main(["--run", f"fresh={run}", "--run", f"reused={reused}", "--out", str(out)]) == 0
    page = out.with_suffix(".md").read_text()
    assert "| generator: best epoch / epochs run / lr schedule (epochs) | 15 / 18 / 20 | – (reused) |" in page
    assert "| generator alone: R@10 / long-tail R@10 | 0.0900 / 0.0400 | – |" in page
    assert "| swing R@10 | 0.1000 -> 0.1200 (+20.0%) | 0.1000 -> 0.1000 (+0.0%) |" in page
    # the AUCs beyond random negatives: Swing-hard negatives and the pairs the discriminator actually filters
    assert "| discriminator ROC-AUC, Swing-hard negatives | 0.4500 | – |" in page
    assert "| discriminator ROC-AUC, the generator's candidates (test) | 0.6400 | – |" in page
