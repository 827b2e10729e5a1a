"""The asyncio coordinator against hostile or careless clients: callers that leave at the worst moment, long polls
that must be served in the order they came, uploaders that stall, downloads of old versions, idle connections to
the metrics port. Each test reproduces one defect found by probing a real coordinator.

"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from aal_rpc.coordinator import app, metrics, servicers
from aal_rpc.coordinator.app import CoordinatorConfig, create_coordinator_server
from aal_rpc.coordinator.servicers import AnnotationServicer, SelectionServicer
from aal_rpc.grpc_utils import create_server, server_loop
from aal_rpc.handlers import SerializedResponses
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import (annotation_pb2, annotation_pb2_grpc, selection_pb2, selection_pb2_grpc, training_pb2,
                              training_pb2_grpc)
from aal_rpc.serde import weights_to_bytes
from tests.conftest import TASK, make_candidate, serve_annotation, wait_until


class _CountedLeases:
    """A coordinator whose lease attempts are counted, so a test can tell when the long-poll dispatcher has made
    its tries."""

    def __init__(self, coordinator):
        self._c = coordinator
        self.inline = coordinator.inline
        self.tries = 0

    def lease(self, *args, **kwargs):
        self.tries += 1
        return self._c.lease(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._c, name)


@pytest.fixture
def annotation_server(make_embedded_coordinator):
    """An AnnotationService alone on 127.0.0.1:0 over an embedded coordinator (lease attempts counted) whose
    signals have no safety net: the dispatcher runs only when S changes, so a test controls every pass."""
    c = make_embedded_coordinator(CoordinatorConfig(lease_seconds=300, poll_seconds=None))
    counted = _CountedLeases(c)
    executor = ThreadPoolExecutor(2)
    servicer = AnnotationServicer(counted, executor)

    server, port = serve_annotation(servicer)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield c, counted, servicer, annotation_pb2_grpc.AnnotationServiceStub(channel)
    channel.close()
    server_loop().run(server.stop(0))
    executor.shutdown(wait=True)


def _dispatcher_parked(c) -> bool:
    """The long-poll dispatcher waits on the queries signal again (its pass is over)."""
    return bool(c.signals.queries._futures)


# -- a long poll answered as its caller leaves -------------------------------------------------------------


def test_an_answer_given_to_a_long_poll_as_its_caller_leaves_goes_straight_back(annotation_server):
    """The dispatcher answers a waiting poll and, before that poll's task runs again, its caller leaves (gRPC
    cancels the task). Python 3.11's asyncio.wait_for then returns the answer instead of raising, the handler
    answered a call nobody reads, and grpc.aio's context.cancelled() stays False for a client's cancel, so the
    done callback never gave the item back: it stayed leased to nobody for the whole lease (300 s). In a storm
    of 20 annotators x 30 random cancels this leaked 5-17 of ~60 leases."""
    c, _, servicer, _ = annotation_server
    c.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[make_candidate("1")])

    async def scenario():
        queue = servicer._queue
        task = asyncio.ensure_future(queue.wait("gone", 0, 20))
        while not queue._waiting:
            await asyncio.sleep(0)
        waiter = queue._waiting[0]
        q = c.lease("gone")  # what the dispatcher does: lease for the waiter, then answer it...
        queue._waiting.remove(waiter)
        waiter.answer.set_result(q)
        task.cancel()  # ...and the caller leaves before the poll's task resumes
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    outcome = server_loop().run(scenario(), timeout=30)
    assert outcome == "cancelled"  # the handler does not answer a caller that has left
    assert wait_until(lambda: c.stats().leased == 0, timeout=10)
    assert c.lease("present").item_id == "1"


# -- arrival order ---------------------------------------------------------------------------------------


def _wait_for_polls(counted, n):
    """Both polls made their first try and wait in the queue."""
    assert wait_until(lambda: counted.tries >= n, timeout=10)


def test_long_polls_are_answered_in_arrival_order_after_a_change_that_brought_nothing(annotation_server):
    """A pass of the dispatcher that found nothing moved the oldest poll to the back of the queue; with the
    signals' safety net on (1 s, the default) that happens every second S stays empty, so which waiting
    annotator gets the next item depended on how many quiet seconds had passed, not on who came first."""
    c, counted, _, stub = annotation_server
    first = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="first", wait_seconds=20),
                                   timeout=30)
    _wait_for_polls(counted, 1)
    second = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="second", wait_seconds=20),
                                    timeout=30)
    _wait_for_polls(counted, 2)
    assert wait_until(lambda: _dispatcher_parked(c), timeout=10)
    tries = counted.tries
    c.signals.queries.fire()  # S changed, but nothing is available (an expiry elsewhere, a safety-net pass)
    assert wait_until(lambda: counted.tries > tries and _dispatcher_parked(c), timeout=10)
    try:
        c.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[make_candidate("1")])
        got = first.result(timeout=20)
        assert got.found and got.query.item_id == "1"
    finally:
        first.cancel()
        second.cancel()


def test_an_item_the_oldest_poll_deferred_goes_to_the_next_one_at_once(annotation_server):
    """The dispatcher stopped its pass at the first poll that found nothing. If that poll's annotator had
    deferred the item that came back, every younger poll waited for the next change of S (forever with the
    safety net off, up to a second with it on) while the item sat available."""
    c, counted, _, stub = annotation_server
    c.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[make_candidate("1")])
    mine = stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id="A"), timeout=10)
    stub.ReleaseQuery(annotation_pb2.ReleaseQueryRequest(lease_id=mine.query.lease_id, item_id="1", annotator_id="A",
                                                         reason=annotation_pb2.RELEASE_REASON_DEFER), timeout=10)
    held = stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id="C"), timeout=10)
    assert held.found
    tries = counted.tries
    a = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="A", wait_seconds=20), timeout=30)
    _wait_for_polls(counted, tries + 1)
    b = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="B", wait_seconds=20), timeout=30)
    _wait_for_polls(counted, tries + 2)
    try:
        stub.ReleaseQuery(annotation_pb2.ReleaseQueryRequest(lease_id=held.query.lease_id, item_id="1",
                                                             annotator_id="C"), timeout=10)
        got = b.result(timeout=20)  # before the fix: found=False after the whole wait
        assert got.found and got.query.item_id == "1"
    finally:
        a.cancel()
        b.cancel()


# -- downloads ---------------------------------------------------------------------------------------------


def test_an_old_version_downloaded_again_is_not_serialized_again(make_embedded_coordinator, monkeypatch):
    """Serialized downloads were kept for the two highest version numbers: a version older than those was
    serialized (and checksummed) anew for every call, and each call's generator also held the blob of its own,
    so N slow readers of an old version held 2N copies of the weights."""
    c = make_embedded_coordinator()
    data = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    for n in range(3):  # three versions (a different server each: one server's same upload is one version)
        c.publish_model(data=data, server_id=f"s{n}", trained_seq=0, num_labels=0, architecture=TASK.architecture,
                        metrics={})
    made = []
    real = servicers._serialized_download
    monkeypatch.setattr(servicers, "_serialized_download", lambda info, d: (made.append(info.version), real(info, d))[1])
    executor = ThreadPoolExecutor(2)

    async def start():
        server = create_server(interceptors=[SerializedResponses()])  # as app.py assembles it
        selection_pb2_grpc.add_SelectionServiceServicer_to_server(SelectionServicer(c, executor), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = server_loop().run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        for version in (3, 2, 1, 1):
            assert len(list(stub.DownloadModel(selection_pb2.DownloadModelRequest(version=version), timeout=10))) > 1
        assert made == [3, 2, 1]
    finally:
        channel.close()
        server_loop().run(server.stop(0))
        executor.shutdown(wait=True)


# -- uploads -----------------------------------------------------------------------------------------------


def test_a_stalled_upload_does_not_hold_up_another(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "UPLOAD_THREADS", 1)  # a stalled uploader holds no upload thread: one is enough
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig())
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    data = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    header = training_pb2.UploadHeader(server_id="s", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                       architecture=TASK.architecture)
    never = threading.Event()
    started = threading.Event()

    def stalled():
        yield training_pb2.UploadModelRequest(header=header)
        started.set()
        never.wait(60)

    stub = training_pb2_grpc.TrainingServiceStub(channel)
    stuck = stub.UploadModel.future(stalled(), timeout=60)
    try:
        assert started.wait(10)
        assert wait_until(lambda: srv.metrics.registry.get_sample_value(
            "aal_rpc_in_flight", {"method": "UploadModel"}) == 1, timeout=10)
        good = stub.UploadModel(iter([training_pb2.UploadModelRequest(header=header),
                                      training_pb2.UploadModelRequest(chunk=data)]), timeout=5)
        assert good.model.version == 1
    finally:
        never.set()
        stuck.cancel()
        channel.close()
        srv.stop(grace=0)


# -- the metrics port --------------------------------------------------------------------------------------


def test_an_idle_connection_to_the_metrics_port_is_not_held_for_good(monkeypatch):
    """Each connection to the metrics port has a thread; one that sends nothing is closed after the handler's
    timeout instead of holding its thread for good."""
    monkeypatch.setattr(metrics._QuietHandler, "timeout", 0.5)
    server, port = metrics.serve(metrics.CoordinatorMetrics(), "127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            assert idle.recv(1) == b""  # the server hung up on the silent connection
    finally:
        server.shutdown()
        server.server_close()
