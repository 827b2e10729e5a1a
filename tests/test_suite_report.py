"""The suite's plan and report, on synthetic results (no processes): every study is planned, every figure and
table is written."""

import numpy as np
from PIL import Image

from aal_rpc.experiment.report import write_report
from aal_rpc.experiment.suite import SCALES, accuracy_at, curve_average, labels_per_model, labels_to_reach, plan


def fake_curve(budget, top):
    return [{"labels": n, "accuracy": top * n / budget, "seconds": float(n), "version": i + 1, "server_id": "s"}
            for i, n in enumerate(range(10, budget + 1, 10))]


def test_curve_metrics():
    curve = fake_curve(100, 0.9)
    assert accuracy_at(curve, 5) == 0.0
    assert accuracy_at(curve, 55) == np.float64(0.9 * 50 / 100)
    assert labels_to_reach(curve, 0.45) == 50 and labels_to_reach(curve, 0.95) is None
    assert abs(curve_average(curve, 100) - np.mean([0.9 * k / 10 for k in range(1, 11)])) < 1e-9
    assert labels_per_model(curve) == 10.0
    assert labels_per_model([{"labels": n} for n in (30, 10, 12, 40)]) == 10.0  # in label order, not publish order


def test_plan_covers_every_study_and_repeats_seeds(tmp_path):
    runs = plan(SCALES["small"], seeds=2, out=tmp_path)
    assert {r.study for r in runs} == {"a", "c", "d", "e", "f"}
    assert len({r.run_id for r in runs}) == len(runs)
    a = [r for r in runs if r.study == "a"]
    assert len(a) == 2 * 3 * 3 * 2 and {r.config.mode for r in a} == {"sync", "async"}
    c = [r for r in runs if r.study == "c" and r.key["method"] == "aal"]
    assert {r.config.servers for r in c} == {1, 2, 4} and c[0].config.assign == "random"
    assert c[0].config.strategies == ["entropy", "least_confidence", "margin"]
    d = [r for r in runs if r.study == "d"]
    assert {r.config.strategies[0] for r in d} == {"cluster_margin", "margin", "random"}
    f = [r for r in runs if r.study == "f"]
    assert {r.config.mode for r in f} == {"sync", "async"}
    assert {r.config.min_steps for r in f} == {SCALES["small"].slow_min_steps} and all(r.config.min_steps == 0 for r in a)
    assert {(r.config.annotator_delay, r.config.budget) for r in f} == {(SCALES["small"].slow_annotator_delay,
                                                                         SCALES["small"].slow_budget)}
    assert not [r for r in plan(SCALES["paper"], seeds=1, out=tmp_path) if r.study == "f"]
    # study (f) runs at least slow_seeds seeds; the other studies run --seeds
    assert {r.key["seed"] for r in f} == set(range(max(2, SCALES["small"].slow_seeds)))
    assert {r.key["seed"] for r in runs if r.study != "f"} == {0, 1}


def test_report_writes_tables_and_figures(tmp_path):
    sc = SCALES["small"]
    results = []
    for r in plan(sc, seeds=2, out=tmp_path):
        budget = r.config.budget
        top = 0.9 + 0.01 * r.key["seed"]
        results.append({"study": r.study, **r.key, "final_accuracy": top, "retrained_accuracy": top - 0.005,
                        "curve": fake_curve(budget, top),
                        "wait_mean": 0.5 if r.config.mode == "sync" else 0.002, "wait_p99": 1.0, "labels": budget,
                        "labels_by_strategy": {}, "seconds": 1.0})
    doc = {"scale": "small", "scale_config": {**sc.__dict__, "batch_sizes": list(sc.batch_sizes),
                                              "cm_batch_sizes": list(sc.cm_batch_sizes),
                                              "slow_batch_sizes": list(sc.slow_batch_sizes)},
           "seeds": 2, "results": results, "seconds": 60.0}
    notes = tmp_path / "notes.md"
    notes.write_text("Our reading.")
    md = tmp_path / "docs" / "RESULTS.md"
    write_report(doc, out_md=md, figures_dir=tmp_path / "docs" / "figures", notes=notes)
    text = md.read_text()
    for heading in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "Reading"):
        assert f"## {heading}" in text
    assert "250×" in text  # 0.5 s / 2 ms
    # (f): wait ratio, labels per model, the retrained accuracies, and the final models' gap
    assert ("| 10 | 500.0 ± 0.0 | 2.00 ± 0.00 | 250× | 10.0 / 10.0 | 0.910 ± 0.011 | 0.910 ± 0.011 | +0.000 | "
            "+0.000 |") in text
    assert "| 25 | margin | 200 ± 0 | 0.905 ± 0.005 | 0.900 ± 0.005 |" in text  # (d): final model and retrained
    assert "0.819 / 0.832 / 0.841" in text  # the paper's Table 1 beside ours
    for png in ("a_sync_vs_async", "b_wait", "d_cluster_margin", "e_curves"):
        assert f"figures/{png}.png" in text
        assert Image.open(tmp_path / "docs" / "figures" / f"{png}.png").size[0] > 300


def test_suite_runs_each_distinct_experiment_once(tmp_path, monkeypatch):
    import aal_rpc.experiment.suite as suite

    ran = []

    def fake_run(config, progress=False):
        ran.append(config)
        top = 0.9 if config.mode == "sync" else 0.89
        return {"final_accuracy": top, "retrained_accuracy": top,
                "wait_seconds": {"mean": 0.5 if config.mode == "sync" else 0.002, "p99": 1.0},
                "curve": fake_curve(config.budget, top), "labels": config.budget, "labels_by_strategy": {},
                "seconds": 2.0}

    monkeypatch.setattr(suite, "run_experiment", fake_run)
    runs = plan(SCALES["small"], seeds=2, out=tmp_path)
    doc = suite.run_suite("small", seeds=2, out=tmp_path, progress=lambda line: None)
    # study c's single-server runs of one strategy are study a's async runs at the first batch size
    assert len(ran) == len(runs) - 2 * 3 and len(doc["results"]) == len(runs)
    assert doc["seconds"] == 2.0 * len(ran)
    assert (tmp_path / "RESULTS.md").exists()
