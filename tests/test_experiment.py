"""aal-experiment end to end on a small budget: every process started and stopped, every output written."""

import json

import pytest
from PIL import Image

from aal_rpc.experiment import ExperimentConfig, run_experiment


@pytest.mark.e2e
def test_small_experiment_writes_summary_and_figures(tmp_path):
    cfg = ExperimentConfig(servers=1, workers=2, strategies=["entropy", "margin"], annotators=3, budget=40,
                           batch_size=5, annotator_delay=0.05, epochs=5, min_steps=0, out=str(tmp_path / "run"))
    summary = run_experiment(cfg, progress=False)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["labels"] == summary["acknowledged"] == 40
    assert 0 <= summary["final_accuracy"] <= 1 and summary["model_versions"] >= 1
    assert len(summary["retrained_accuracies"]) == cfg.eval_repeats == 3  # the chosen labels, retrained afresh
    assert summary["retrained_accuracy"] == pytest.approx(sum(summary["retrained_accuracies"]) / 3)
    assert sum(summary["labels_by_strategy"].values()) == 40
    # labels per model version published, and the labels chosen before any model: at least the first batch
    assert summary["labels_per_model"] == 40 / max(p["version"] for p in summary["curve"])
    assert cfg.batch_size / 40 <= summary["cold_start_share"] <= 1 and summary["annotation_seconds"] > 0
    assert set(summary["labels_by_strategy"]) <= {"random", "typiclust", "entropy", "margin"}
    assert {"mean", "p50", "p99"} <= set(summary["wait_seconds"])
    assert all({"labels", "accuracy", "seconds"} <= set(p) for p in summary["curve"])
    assert summary["config"]["budget"] == 40 and summary["worker_strategies"] == ["entropy", "margin"]
    for name in ("accuracy.png", "wait.png"):
        assert Image.open(tmp_path / "run" / name).size[0] > 100
    assert not [p for p in (tmp_path / "run" / "logs").glob("*.log") if "Traceback" in p.read_text()]
