"""The Prometheus endpoint reports pools, rates, waits, RPC latency, models, candidates and training rounds."""

import socket
import urllib.request

import numpy as np

from aal_rpc.chunking import sha256_hex
from aal_rpc.coordinator.metrics import CoordinatorMetrics, serve
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.types import Payload
from tests.conftest import TASK


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_endpoint(grpc_coordinator):
    address, srv = grpc_coordinator
    http, port = serve(srv.metrics, "127.0.0.1", 0)
    try:
        x = Payload.from_array(np.zeros(TASK.input_shape, np.float32))
        with CoordinatorClient(address) as c, AnnotationClient(address, "ann") as a:
            c.submit_candidates(worker_id="w7", strategy="margin", model_version=0,
                                candidates=[(str(i), x, 0.5) for i in range(3)])
            for _ in range(2):
                a.submit(a.lease(), 1)
            data = weights_to_bytes(build_model("mlp", TASK.input_shape, 10).state_dict())
            srv.coordinator.publish_model(data=data, server_id="s1", trained_seq=2, num_labels=2,
                                          architecture="mlp", metrics={}, sha256=sha256_hex(data))
        m = scrape(port)
    finally:
        http.shutdown()
    assert m['aal_pool_items{pool="labeled"}'] == 2 and m['aal_pool_items{pool="queued"}'] == 1
    assert m['aal_labels_total{strategy="margin"}'] == 2 and m["aal_leases_total"] == 2
    assert m["aal_annotator_wait_seconds_count"] == 1  # the second lease followed a label
    assert m['aal_candidates_total{strategy="margin",worker="w7"}'] == 3
    assert m['aal_training_rounds_total{server="s1"}'] == 1 and m["aal_latest_model_version"] == 1
    assert 0 <= m["aal_latest_model_age_seconds"] < 60
    assert m['aal_rpc_latency_seconds_count{code="OK",method="SubmitLabel"}'] == 2


def test_metrics_server_starts_without_name_lookups(monkeypatch):
    """Against a resolver that does not answer, a reverse lookup at bind time stalls the coordinator's start;
    the metrics server binds and serves with none."""
    def no_lookups(*args, **kwargs):
        raise AssertionError("the metrics server looked a name up")

    monkeypatch.setattr(socket, "getfqdn", no_lookups)
    monkeypatch.setattr(socket, "gethostbyaddr", no_lookups)
    metrics = CoordinatorMetrics()
    metrics.leases.inc()
    http, port = serve(metrics, "127.0.0.1", 0)
    try:
        assert scrape(port)["aal_leases_total"] == 1
    finally:
        http.shutdown()
        http.server_close()


def test_names_clients_choose_cannot_grow_the_metrics_without_bound():
    from aal_rpc.coordinator.metrics import MAX_LABEL_VALUES, MAX_WAITING_ANNOTATORS

    metrics = CoordinatorMetrics()
    for i in range(2 * MAX_LABEL_VALUES):
        metrics.candidates_submitted(f"worker-{i}", f"strategy-{i}", 1)
        metrics.model_published(f"server-{i}")
    for i in range(MAX_WAITING_ANNOTATORS + 50):
        metrics.labeled(f"annotator-{i}", "margin")
    workers = {s.labels["worker"] for m in metrics.candidates.collect() for s in m.samples}
    servers = {s.labels["server"] for m in metrics.rounds.collect() for s in m.samples}
    assert len(workers) == len(servers) == MAX_LABEL_VALUES + 1 and "other" in workers and "other" in servers
    assert len(metrics._last_label) == MAX_WAITING_ANNOTATORS
