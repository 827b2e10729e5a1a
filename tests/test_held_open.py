"""No caller can starve another: calls held open take no thread, unauthenticated callers hold nothing, and a long
poll whose caller has gone takes nothing (or gives it straight back)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aal_rpc.client import AnnotationClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.servicers import AnnotationServicer
from aal_rpc.grpc_utils import server_loop
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import ClientSecurity
from tests.conftest import TASK, make_candidate, serve_annotation, wait_until

TOKENS = {"ann-token": "annotator", "srv-token": "server", "wrk-token": "worker", "adm-token": "admin"}
STORE_THREADS = 4  # far fewer than the calls held open below


def _auth(token):
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def coordinator(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30),
                                    max_workers=STORE_THREADS, tokens=TOKENS)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield srv, channel
    channel.close()
    srv.stop(grace=0)


def test_held_long_polls_and_streams_leave_health_stats_and_leases_answering(coordinator):
    srv, channel = coordinator
    annotation = annotation_pb2_grpc.AnnotationServiceStub(channel)
    training = training_pb2_grpc.TrainingServiceStub(channel)
    selection = selection_pb2_grpc.SelectionServiceStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    never = threading.Event()

    def open_requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        never.wait(30)

    polls = [annotation.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id=f"a{i}", wait_seconds=25),
                                          metadata=_auth("ann-token"), timeout=30) for i in range(150)]
    follows = [training.StreamLabels(training_pb2.StreamLabelsRequest(after_seq=0, follow=True),
                                     metadata=_auth("srv-token"), timeout=30) for _ in range(40)]
    model_polls = [selection.GetLatestModel.future(selection_pb2.GetLatestModelRequest(wait_seconds=25),
                                                   metadata=_auth("wrk-token"), timeout=30) for _ in range(40)]
    reflections = [reflection.ServerReflectionInfo(open_requests(), metadata=_auth("adm-token"), timeout=30)
                   for _ in range(40)]
    try:
        for stream in reflections:
            assert next(stream).list_services_response.service  # open, answered, and held
        # Every held call waits, yet the store's four threads are free for everything else.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stats = admin_pb2_grpc.AdminServiceStub(channel).GetStats(admin_pb2.GetStatsRequest(),
                                                                  metadata=_auth("adm-token"), timeout=5)
        assert stats.leased == 0
        assert not any(p.done() for p in (*polls, *model_polls))
        # An item that arrives is taken by exactly one of the waiting polls.
        srv.coordinator.submit_candidates(worker_id="w", strategy="random", model_version=0,
                                          candidates=[make_candidate("7")])
        winners = []
        done = threading.Event()
        for p in polls:
            p.add_done_callback(lambda f: (not f.cancelled() and f.exception() is None and f.result().found
                                           and (winners.append(f.result()), done.set())))
        assert done.wait(10)
        assert [w.query.item_id for w in winners] == ["7"]
    finally:
        never.set()
        for call in (*polls, *model_polls, *follows, *reflections):
            call.cancel()


def test_an_unauthenticated_caller_holds_no_stream_open(coordinator):
    _, channel = coordinator
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    never = threading.Event()

    def open_requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        never.wait(30)

    try:
        with pytest.raises(grpc.RpcError) as info:
            next(reflection.ServerReflectionInfo(open_requests(), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        never.set()
    # nor a health watch; a health check stays open to probes without a token
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        next(watch)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_a_cancelled_long_poll_takes_nothing(coordinator):
    srv, channel = coordinator
    annotation = annotation_pb2_grpc.AnnotationServiceStub(channel)
    registry = srv.metrics.registry

    def sample(name, **labels):
        return registry.get_sample_value(name, {"method": "LeaseQuery", **labels}) or 0

    poll = annotation.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="gone", wait_seconds=25),
                                        metadata=_auth("ann-token"), timeout=30)
    assert wait_until(lambda: sample("aal_rpc_in_flight") == 1, timeout=10)  # it waits at the coordinator
    poll.cancel()
    assert wait_until(lambda: sample("aal_rpc_latency_seconds_count", code="CANCELLED") == 1, timeout=10)
    srv.coordinator.submit_candidates(worker_id="w", strategy="random", model_version=0,
                                      candidates=[make_candidate("3")])
    with AnnotationClient(f"127.0.0.1:{srv.port}", "present", security=ClientSecurity(token="ann-token")) as client:
        q = client.lease(wait_seconds=5)
    assert q is not None and q.item_id == "3"


class _GatedLease:
    """A coordinator whose lease waits for a gate, so a test can cancel the call while the lease is under way
    (on a store thread, as a database-backed lease runs)."""

    inline = frozenset()

    def __init__(self, coordinator):
        self._c = coordinator
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.returned = threading.Event()

    def lease(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        try:
            return self._c.lease(*args, **kwargs)
        finally:
            self.returned.set()

    def __getattr__(self, name):
        return getattr(self._c, name)


def test_an_item_leased_for_a_call_cancelled_meanwhile_goes_straight_back(make_embedded_coordinator):
    c = make_embedded_coordinator(CoordinatorConfig(lease_seconds=300))
    c.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[make_candidate("5")])
    gated = _GatedLease(c)
    executor = ThreadPoolExecutor(2)

    server, port = serve_annotation(AnnotationServicer(gated, executor))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        poll = annotation_pb2_grpc.AnnotationServiceStub(channel).LeaseQuery.future(
            annotation_pb2.LeaseQueryRequest(annotator_id="gone", wait_seconds=10), timeout=20)
        assert gated.entered.wait(10)
        poll.cancel()
        gated.gate.set()  # the lease completes for a caller that has left
        assert gated.returned.wait(10)
        assert wait_until(lambda: c.stats().leased == 0, timeout=10)  # given back on the store's threads
        assert c.stats().queued == 1
        assert c.lease("someone else").item_id == "5"
    finally:
        channel.close()
        server_loop().run(server.stop(0))
        executor.shutdown(wait=False)
