"""`make bench-smoke` as part of `make test`: every benchmark runs end to end at tiny sizes, so none can rot.
No timing is asserted; only that each produced its figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.timeout(900)  # about 3.5 minutes here: more than the suite's 300 s bound for one test
def test_every_benchmark_runs_at_smoke_size(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          timeout=840, capture_output=True, text=True)
    assert done.returncode == 0, f"the smoke run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    b = results["benchmarks"]
    assert set(b) == {"annotators", "model_distribution", "worker_scoring", "cluster_margin", "scale_sim", "growth",
                      "store_backends", "cnn_vs_textbook", "web_latency", "labelstudio_sync", "work_per_label",
                      "held_open", "capacity", "own_data", "semi_supervised", "first_minute", "cold_start",
                      "frozen_backbone", "crowd", "replicas"}
    assert b["annotators"]["measured"]["labels"] > 0 and b["annotators"]["bare"]["count"] > 0
    # over the AnnotationSession streams against bare bidirectional streams, and the unary calls beside them
    assert b["annotators"]["bare"]["pairs_per_second"] > 0 and b["annotators"]["unary"]["measured"]["labels"] > 0
    assert b["model_distribution"]["download_mb_per_s"] > 0 and b["model_distribution"]["bare_mb_per_s"] > 0
    assert b["worker_scoring"]["ratio"] > 0
    assert b["cluster_margin"]["rows"][0]["clusters"] >= 1
    assert b["scale_sim"]["errors"] == 0 and b["scale_sim"]["labeled_in_pool"] == b["scale_sim"]["labels"]
    assert [r["labels"] for r in b["growth"]["rows"]] == [1_050, 5_050]
    s = b["store_backends"]
    assert "skipped" in s or (s["postgresql"]["labels"] > 0 and s["sqlite"]["labels"] > 0)
    ls = b["labelstudio_sync"]
    assert "skipped" in ls or ls["webhooks"]["count"] > 0
    w = b["web_latency"]
    assert "skipped" in w or w["labels_in_L"] == w["acknowledged"] > 0
    h = b["held_open"]
    assert h["held"]["still_open_when_probed"] == h["held"]["long_polls"] + h["held"]["follow_streams"] + \
        h["held"]["downloads"] + h["held"]["reflection_streams"]
    assert h["unauthenticated_reflection"]["refused"] == h["unauthenticated_reflection"]["attempted"] > 0, \
        h["unauthenticated_reflection"]
    assert any(step["wait"]["count"] > 0 for step in b["capacity"]["steps"])
    assert b["capacity"]["transport"] == "AnnotationSession"
    assert b["work_per_label"]["labels"] > 0
    assert b["first_minute"]["rows"][0]["first_model_seconds"]["n"] == 1
    assert 0 <= b["cold_start"]["rows"][0]["picks"]["typical, untrained network"]["accuracy"] <= 1
    assert b["own_data"]["labels"] == 40 and b["own_data"]["true_accuracy"] is not None
    assert [(r["data"], len(r["supervised"]), len(r["semi_supervised"])) for r in b["semi_supervised"]["rows"]] == [
        ("digits28", 1, 1), ("text", 1, 1)]
    f = b["frozen_backbone"]
    assert [(r["data"], r["labels"]) for r in f["rows"]] == [("digits28", 20), ("text", 8)]
    assert all(0 <= r[k]["mean"] <= 1 for r in f["rows"] for k in ("scratch", "same classes", "other classes"))
    assert all(t["cached_items_per_second"] > 0 and t["full_pass_items_per_second"] > 0 for t in f["timing"])
    c = b["crowd"]["rows"][0]
    assert c["arm"] == "adaptive" and c["items"]["mean"] >= 1 and 0 <= c["consensus_right"]["mean"] <= 1
    rep = b["replicas"]
    assert "skipped" in rep or (all(rep["replicas"][n]["labels"] > 0 for n in ("1", "2")) and
                                len(rep["replicas"]["2"]["open_sessions_per_replica"]) == 2 and
                                rep["bound"]["same_transactions"]["labels"] > 0)
    assert "| 1 |" in (tmp_path / "results.md").read_text()
