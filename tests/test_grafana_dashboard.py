"""k8s/grafana-dashboard.json is built on the coordinator's metrics: every query names only series a coordinator
exports (with a label, a skip, a deferral and a model behind them, so that every series exists)."""

import json
import re
from pathlib import Path

from aal_rpc.chunking import sha256_hex
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from tests.conftest import TASK, make_candidate

DASHBOARD = Path(__file__).resolve().parent.parent / "k8s" / "grafana-dashboard.json"
METRIC = re.compile(r"\baal_[a-z0-9_]+\b")


def queries() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def exported(srv) -> set[str]:
    c = srv.coordinator
    c.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(3)])
    for how in (lambda q: c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="a"),
                lambda q: c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="a", skip=True),
                lambda q: c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="a", defer=True)):
        how(c.lease("a"))
    data = weights_to_bytes(build_model("mlp", TASK.input_shape, TASK.num_classes).state_dict())
    c.publish_model(data=data, server_id="s", trained_seq=1, num_labels=1, architecture="mlp", metrics={},
                    sha256=sha256_hex(data))
    return {s.name for family in srv.metrics.registry.collect() for s in family.samples}


def test_the_dashboards_queries_name_only_metrics_the_coordinator_exports(grpc_coordinator):
    named = {m for q in queries() for m in METRIC.findall(q)}
    assert named, "the dashboard queries no aal_ metric"
    assert named - exported(grpc_coordinator[1]) == set()
    for family in ("aal_stopping_suggested", "aal_remaining_items", "aal_estimated_accuracy",
                   "aal_annotator_labels_total", "aal_stop_set_agreement"):
        assert family in named  # what the lead's page shows is on the dashboard too


def test_the_dashboard_is_one_grafana_dashboard_with_unique_panels():
    d = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and d["uid"] and d["title"]
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource"}
    assert all(t["datasource"]["uid"] == "${datasource}" for p in d["panels"] for t in p["targets"])
