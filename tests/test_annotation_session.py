"""AnnotationSession, the one stream per annotation tool (annotation.proto, "Sessions"), over real gRPC on both
stores: the window and its pushes, each command's answer in order, errors that leave the stream open, what
happens to held leases when a tool disconnects, and AnnotationClient over it through a coordinator killed
mid-stream (no acknowledged label lost, none recorded twice)."""

from __future__ import annotations

import gc
import logging
import queue
import signal
import socket
import time

import grpc
import pytest

from aal_rpc.client import AnnotationClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.sessions import MAX_SESSION_WINDOW
from aal_rpc.experiment.processes import command, read_address
from aal_rpc.proto.v1 import annotation_pb2 as pb
from aal_rpc.security import ClientSecurity, Principal
from tests.conftest import TASK, annotation_stub, check_acknowledged_labels, make_candidate, wait_until


class Tool:
    """A raw session: send messages, read answers one at a time."""

    def __init__(self, stub, annotator="alice", *, want=0, keep_leases=False):
        self._out: queue.Queue = queue.Queue()
        self.queries: list[pb.Query] = []
        self._responses = stub.AnnotationSession(iter(self._out.get, None))
        self.send(pb.SessionRequest(ref=1, want=want, open=pb.SessionOpen(annotator_id=annotator,
                                                                          keep_leases=keep_leases)))
        opened = self.read()
        assert opened.ref == 1 and opened.opened.annotator_id == annotator

    def send(self, msg):
        self._out.put(msg)

    def read(self) -> pb.SessionResponse:
        r = next(self._responses)
        self.queries += r.queries
        return r

    def until_queries(self, n: int) -> list[pb.Query]:
        while len(self.queries) < n:
            self.read()
        return self.queries

    def label(self, ref, q, label=3, want=0) -> pb.SessionResponse:
        self.send(pb.SessionRequest(ref=ref, want=want, label=pb.SessionLabel(lease_id=q.lease_id,
                                                                              item_id=q.item_id, label=label)))
        while (r := self.read()).ref != ref:
            pass
        return r

    def end(self):
        self._out.put(None)
        return list(self._responses)


def queue_items(c, n, start=0):
    c.submit_candidates(worker_id="w0", strategy="entropy", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(start, start + n)])


def test_the_window_pushes_queries_and_commands_are_answered_in_order(make_coordinator):
    c = make_coordinator(CoordinatorConfig(lease_seconds=60))
    queue_items(c, 5)
    with annotation_stub(c) as stub:
        tool = Tool(stub, want=2)
        q1, q2 = tool.until_queries(2)
        assert c.stats().leased == 2 and c.stats().queued == 3  # exactly the credit asked for
        # a label with one more credit: acknowledged once durable, and the next query pushed
        r = tool.label(2, q1, want=1)
        assert r.labeled.seq >= 1 and not r.labeled.duplicate
        tool.until_queries(3)
        # the same label again (a tool that lost the acknowledgement): duplicate, the same seq
        again = tool.label(3, q1)
        assert again.labeled.duplicate and again.labeled.seq == r.labeled.seq
        # another label on that lease is refused; the stream goes on
        other = tool.label(4, q1, label=5)
        assert other.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        # a renewal and a deferral, answered in order
        tool.send(pb.SessionRequest(ref=5, renew=pb.SessionRenew(lease_id=q2.lease_id, item_id=q2.item_id)))
        tool.send(pb.SessionRequest(ref=6, release=pb.SessionRelease(lease_id=q2.lease_id, item_id=q2.item_id,
                                                                    reason=pb.RELEASE_REASON_DEFER)))
        renewed = tool.read()
        assert renewed.ref == 5 and renewed.renewed.deadline_unix > time.time()
        released = tool.read()
        assert released.ref == 6 and released.WhichOneof("answer") == "released"
        tool.end()
    assert c.stats().labeled == 1


def test_an_empty_pool_says_dry_once_then_pushes_when_items_come(make_coordinator):
    c = make_coordinator()
    with annotation_stub(c) as stub:
        tool = Tool(stub, want=1)
        r = tool.read()
        assert r.dry and not r.queries
        queue_items(c, 1)
        pushed = tool.read()
        assert [q.item_id for q in pushed.queries] == ["0"]
        tool.end()


@pytest.mark.parametrize("keep_leases", [False, True])
def test_a_tool_that_disconnects_gets_its_leases_back_by_the_rule_it_chose(make_coordinator, keep_leases):
    c = make_coordinator(CoordinatorConfig(lease_seconds=60))
    queue_items(c, 4)
    with annotation_stub(c) as stub:
        tool = Tool(stub, want=3, keep_leases=keep_leases)
        q1, *_ = tool.until_queries(3)
        tool.label(2, q1)
        tool._responses.cancel()  # the tool vanishes mid-window
        # keep_leases: the two held leases run to their deadline, as unary leases do; else back to S at once
        assert wait_until(lambda: c.stats().leased == (2 if keep_leases else 0), timeout=10)
    s = c.stats()
    assert s.labeled == 1 and s.queued + s.leased == 3


def test_a_tool_that_leaves_gives_back_the_queries_still_on_their_way_and_keeps_those_it_received(
        make_coordinator):
    """keep_leases keeps what the tool received; close(received=n) sends back the queries pushed after the first n,
    which it never saw, even while they were still on the wire, and nothing is pushed after it."""
    c = make_coordinator(CoordinatorConfig(lease_seconds=60))
    with annotation_stub(c) as stub:
        tool = Tool(stub, want=3, keep_leases=True)
        assert tool.read().dry
        queue_items(c, 5)
        tool.until_queries(3)  # pushed and sent; the tool says it saw only the first
        tool.send(pb.SessionRequest(ref=2, close=pb.SessionClose(received=1)))
        while (r := tool.read()).ref != 2:
            pass
        assert r.closed.given_back == 2
        s = c.stats()
        assert (s.leased, s.queued) == (1, 4)  # at once, before the answer
        tool.send(pb.SessionRequest(want=2))  # a hostile tool asks again after close: pushing has stopped for good
        tool.send(pb.SessionRequest(ref=3, want=2, renew=pb.SessionRenew(lease_id="x", item_id="0")))
        while (r := tool.read()).ref != 3:
            pass
        assert len(tool.queries) == 3 and (c.stats().leased, c.stats().queued) == (1, 4)
        tool.end()
    # when the stream ends, those go back too; the one query received runs to its deadline
    assert wait_until(lambda: (c.stats().leased, c.stats().queued) == (1, 4), timeout=10)


def test_malformed_sessions_end_with_invalid_argument_and_hostile_credit_is_bounded(make_coordinator):
    c = make_coordinator()
    queue_items(c, MAX_SESSION_WINDOW + 10)
    with annotation_stub(c) as stub:
        out = stub.AnnotationSession(iter([pb.SessionRequest(ref=1, label=pb.SessionLabel(lease_id="x"))]))
        with pytest.raises(grpc.RpcError) as info:
            list(out)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        tool = Tool(stub)
        tool.send(pb.SessionRequest(ref=2, open=pb.SessionOpen(annotator_id="alice")))
        with pytest.raises(grpc.RpcError) as info:
            while True:
                tool.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # more credit than the window allows, and an id that is too long: bounded, and refused
        tool = Tool(stub, "bob", want=2 ** 31)
        tool.until_queries(MAX_SESSION_WINDOW)
        tool.send(pb.SessionRequest(ref=3, label=pb.SessionLabel(lease_id="l" * 10_000, item_id="0", label=1)))
        while (r := tool.read()).ref != 3:
            pass
        assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        time.sleep(0.3)
        assert c.stats().leased == MAX_SESSION_WINDOW
        tool.end()
        out = stub.AnnotationSession(iter([pb.SessionRequest(ref=1, open=pb.SessionOpen(annotator_id=""))]))
        with pytest.raises(grpc.RpcError) as info:
            list(out)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_lease_cap_is_said_on_the_stream_and_resets_the_credit(make_coordinator):
    c = make_coordinator(CoordinatorConfig(max_leases_per_annotator=2))
    queue_items(c, 5)
    with annotation_stub(c) as stub:
        tool = Tool(stub, want=3)
        while True:
            r = tool.read()
            if r.WhichOneof("answer") == "error":
                break
        assert r.ref == 0 and r.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert len(tool.queries) == 2
        tool.end()


def test_annotation_client_holds_one_query_ready_and_gives_it_back_on_close(grpc_coordinator):
    address, srv = grpc_coordinator
    queue_items(srv.coordinator, 3)
    with AnnotationClient(address, "alice", prefetch=1) as client:
        q = client.lease(wait_seconds=5)
        assert q is not None
        client.submit(q, 1)  # its acknowledgement brings the next query along
        assert wait_until(lambda: srv.coordinator.stats().leased == 1, timeout=10)
        nxt = client.lease(wait_seconds=0)
        assert nxt is not None and nxt.item_id != q.item_id
        client.release(nxt)
        assert wait_until(lambda: srv.coordinator.stats().leased == 1, timeout=10)  # the next one, ready
    assert srv.coordinator.stats().leased == 0  # closing gave the untaken query back


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_coordinator_killed_mid_stream_loses_no_acknowledged_label_and_records_none_twice(
        tmp_path, procs, request, store):
    """Annotators label over their streams while the coordinator is SIGKILLed twice and restarted on the same
    address: every acknowledged label is in L, and no item is labeled twice."""
    args = ["--data-dir", tmp_path / "data", "--pool-capacity", "40", "--dataset", "digits"]
    if store == "postgresql":
        args += ["--store", request.getfixturevalue("postgres").new_database()]
    port = _free_port()

    def start():
        proc = procs.start("coordinator", command("coordinator", "--listen", f"127.0.0.1:{port}", *args),
                           capture_stdout=True)
        return proc, read_address(proc, "coordinator", procs.log_dir / "coordinator.log")

    coord, address = start()
    procs.start("worker", command("worker", "--coordinator", address, "--strategy", "random", "--batch-size", "20",
                                  "--poll-seconds", "0.1", "--threads", "1"))
    acks = tmp_path / "acks.jsonl"
    annotate = procs.start("annotate", command(
        "annotate", "--coordinator", address, "--oracle", "--annotators", "4", "--budget", "120", "--delay", "0.02",
        "--json", "--acks-file", acks), capture_stdout=True)

    def acked() -> int:
        return len(acks.read_text().splitlines()) if acks.exists() else 0

    for round_ in range(2):
        assert wait_until(lambda: acked() >= 30 * (round_ + 1)), "annotators made no progress"
        coord.send_signal(signal.SIGKILL)
        coord.wait()
        procs.procs.pop("coordinator")
        coord, _ = start()
    check_acknowledged_labels(annotate, acks, address, 120)


def test_a_token_names_the_session_annotator_and_a_worker_token_is_refused(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "d", TASK, CoordinatorConfig(), tokens={
        "ann-token": Principal("annotator", "carol"), "w-token": Principal("worker")})
    try:
        queue_items(srv.coordinator, 2)
        address = f"127.0.0.1:{srv.port}"
        with AnnotationClient(address, "", security=ClientSecurity(token="ann-token")) as carol:
            carol.submit(carol.lease(wait_seconds=5), 2)
        assert [r.annotator_id for r in srv.coordinator.read_labels(0, 10, include_payload=False)] == ["carol"]
        with AnnotationClient(address, "x", security=ClientSecurity(token="w-token"), retry_for=1) as worker:
            with pytest.raises(grpc.RpcError) as info:
                worker.lease(wait_seconds=1)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        srv.stop(grace=0)


def _secured(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "d", TASK, CoordinatorConfig(), tokens={
        "ann-token": Principal("annotator", "carol")})
    return srv, f"127.0.0.1:{srv.port}"


def test_a_refusal_quotes_a_long_id_in_a_bounded_message(tmp_path):
    """An id of 20,000 characters that is not the token's: PERMISSION_DENIED with a message of bounded length, on the
    unary calls and on the stream (echoed whole, the status outgrew gRPC's metadata limit: RESOURCE_EXHAUSTED; a
    character outside ASCII travels as up to 12 bytes of it)."""
    srv, address = _secured(tmp_path)
    try:
        queue_items(srv.coordinator, 2)
        for stream, claimed in ((False, "z" * 20_000), (True, "z" * 20_000), (True, "\N{GRINNING FACE}" * 20_000)):
            with AnnotationClient(address, claimed, security=ClientSecurity(token="ann-token"), retry_for=1,
                                  stream=stream) as tool:
                with pytest.raises(grpc.RpcError) as info:
                    tool.lease(wait_seconds=1)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, stream
                assert "carol" in info.value.details() and len(info.value.details().encode()) < 1_100
    finally:
        srv.stop(grace=0)


def test_a_tool_that_stops_reading_then_leaves_ends_its_session_without_an_error(tmp_path, caplog):
    """A tool floods commands without reading the answers until the coordinator's writes wait on it, then cancels:
    its leases come back and nothing is logged as an error (the stream's generator, left suspended by grpcio, is
    closed later in a task of its own; its reader must not wait forever on answers nobody will send)."""
    srv, address = _secured(tmp_path)
    channel = grpc.insecure_channel(address)
    try:
        queue_items(srv.coordinator, 5)

        def flood():
            yield pb.SessionRequest(ref=1, want=3, open=pb.SessionOpen(keep_leases=False))
            for ref in range(2, 60_000):
                yield pb.SessionRequest(ref=ref, renew=pb.SessionRenew(lease_id="a" * 256, item_id="b"))

        from aal_rpc.proto.v1 import annotation_pb2_grpc
        call = annotation_pb2_grpc.AnnotationServiceStub(channel).AnnotationSession(
            flood(), metadata=(("authorization", "Bearer ann-token"),))
        assert wait_until(lambda: srv.coordinator.stats().leased == 3, timeout=10)
        time.sleep(3)  # the answers back up: grpcio's window, then the session's outbox, then its reader
        call.cancel()
        assert wait_until(lambda: srv.coordinator.stats().leased == 0, timeout=10)
        gc.collect()
        time.sleep(0.5)  # what the collector finalized runs on the coordinator's loop
    finally:
        channel.close()
        srv.stop(grace=0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
