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
from tests.conftest import TASK, make_candidate


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
    # the client labels over its AnnotationSession stream: each command is timed apart from the stream
    assert m['aal_rpc_latency_seconds_count{code="OK",method="AnnotationSession.label"}'] == 2


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


def test_the_lead_figures_are_metrics_too(grpc_coordinator):
    """What the lead's page shows is exported: the pool's size and what remains, labels by origin, each
    annotator's labels, skips and defers, held-out accuracy, staleness and the stopping signal."""
    from aal_rpc.measures import POOL_ITEMS, STOP_SET_AGREEMENT

    address, srv = grpc_coordinator
    c = srv.coordinator
    c.submit_candidates(worker_id="w7", strategy="random", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(5)])

    def lease_and(how, **kwargs):
        q = c.lease("ann")
        how(lease_id=q.lease_id, item_id=q.item_id, annotator_id="ann", **kwargs)

    for _ in range(2):
        lease_and(c.submit_label, label=1)
    lease_and(c.release, skip=True)
    lease_and(c.release, defer=True)
    weights = weights_to_bytes(build_model("mlp", TASK.input_shape, 10).state_dict())
    c.publish_model(data=weights, server_id="s1", trained_seq=2, num_labels=2, architecture="mlp",
                    metrics={"accuracy": 0.75, POOL_ITEMS: 100.0, STOP_SET_AGREEMENT: 0.5}, sha256=sha256_hex(weights))
    lease_and(c.submit_label, label=2)
    http, port = serve(srv.metrics, "127.0.0.1", 0)
    try:
        m = scrape(port)
        assert m['aal_labels_by_origin{origin="cold_start"}'] == 3  # read incrementally: a second scrape agrees
        assert scrape(port)['aal_labels_by_origin{origin="cold_start"}'] == 3
    finally:
        http.shutdown()
    assert m["aal_pool_size"] == 100 and m["aal_remaining_items"] == 100 - 3 - 1
    assert m['aal_labels_by_origin{origin="model"}'] == 0 and m["aal_chosen_by_model_share"] == 0
    assert m['aal_annotator_labels_total{annotator="ann"}'] == 3
    assert m['aal_annotator_skips_total{annotator="ann"}'] == 1
    assert m['aal_annotator_defers_total{annotator="ann"}'] == 1
    assert m["aal_held_out_accuracy"] == 0.75 and m["aal_latest_model_labels_behind"] == 1
    assert m["aal_stopping_suggested"] == 0 and m["aal_stop_set_agreement"] != m["aal_stop_set_agreement"]  # NaN


def test_annotators_past_the_bound_are_summed_as_other():
    from aal_rpc.coordinator.lead_metrics import LeadCollector
    from aal_rpc.types import AnnotatorCounts, Stats

    stats = Stats(labeled=0, queued=0, leased=0, skipped=0, latest_model_version=0, models=0, last_seq=0,
                  candidates_submitted=0, candidates_evicted=0, labels_by_strategy={}, pool_capacity=1, mode="async",
                  annotators={f"a{i:03d}": AnnotatorCounts(i, 1, 0) for i in range(10)})
    [labels, skips, _] = LeadCollector(None, max_annotators=3)._annotators(stats)
    assert {s.labels["annotator"]: s.value for s in labels.samples} == {"a009": 9, "a008": 8, "a007": 7,
                                                                         "other": sum(range(7))}
    assert {s.labels["annotator"]: s.value for s in skips.samples}["other"] == 7
