"""Bytes that are not the request message get INVALID_ARGUMENT and a short, rate-limited log line: never
INTERNAL, never a traceback per request."""

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.decoding import RateLimitedLog
from aal_rpc.proto.v1 import training_pb2
from tests.conftest import TASK, code_of

GARBAGE = b"\xff" * 8  # a varint that never ends: no protobuf message parses from it


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_no_traceback(caplog):
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage() and "deserializing" not in record.getMessage()


@pytest.fixture
def served(tmp_path, caplog):
    """(plain channel, CoordinatorServer); the log captured from INFO up."""
    caplog.set_level(logging.INFO)
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield channel, srv
    channel.close()
    srv.stop(0)


def test_garbage_to_unary_methods_is_invalid_argument(served, caplog):
    channel, srv = served
    lease = channel.unary_unary("/aal.v1.AnnotationService/LeaseQuery")  # no serializers: raw bytes go out
    for _ in range(3):
        err = rpc_error(lambda: lease(GARBAGE, timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "request is not a valid LeaseQueryRequest message"
    labels = channel.unary_stream("/aal.v1.TrainingService/StreamLabels")  # a response stream
    assert code_of(lambda: list(labels(GARBAGE, timeout=10))) == grpc.StatusCode.INVALID_ARGUMENT
    assert_no_traceback(caplog)
    lines = [r.getMessage() for r in caplog.records if r.name == "aal_rpc.coordinator.decoding"]
    assert lines and "/aal.v1.AnnotationService/LeaseQuery" in lines[0] and "\n" not in lines[0]
    assert len(lines) < 5  # rate limited: not one line per request


def test_garbage_in_an_upload_stream_is_invalid_argument(served, caplog):
    channel, srv = served
    upload = channel.stream_unary("/aal.v1.TrainingService/UploadModel")
    err = rpc_error(lambda: upload(iter([GARBAGE]), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "request is not a valid UploadModelRequest message"
    header = training_pb2.UploadModelRequest(header=training_pb2.UploadHeader(
        server_id="s", architecture="mlp", size_bytes=3, sha256="0" * 64)).SerializeToString()
    assert code_of(lambda: upload(iter([header, GARBAGE]), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert srv.coordinator.registry.latest() is None
    assert_no_traceback(caplog)


def test_garbage_to_a_bidirectional_stream_is_invalid_argument(served, caplog):
    channel, _ = served
    reflection = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    err = rpc_error(lambda: list(reflection(iter([GARBAGE]), timeout=10)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "request is not a valid ServerReflectionRequest message"
    assert_no_traceback(caplog)


def test_garbage_to_the_health_port_is_invalid_argument(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, health_address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.health_port}") as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            assert code_of(lambda: check(GARBAGE, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        srv.stop(0)
    assert_no_traceback(caplog)


def test_garbage_needs_a_token_first(tmp_path, caplog):
    """With authentication on, garbage without a valid token is UNAUTHENTICATED (its bytes are never parsed);
    with one, INVALID_ARGUMENT."""
    caplog.set_level(logging.INFO)
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens={"srv-token": "server"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            upload = channel.stream_unary("/aal.v1.TrainingService/UploadModel")
            begin = channel.unary_unary("/aal.v1.TrainingService/BeginRound")
            assert code_of(lambda: upload(iter([GARBAGE]), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda: begin(GARBAGE, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
            token = (("authorization", "Bearer srv-token"),)
            assert code_of(lambda: upload(iter([GARBAGE]), metadata=token, timeout=10)) == \
                grpc.StatusCode.INVALID_ARGUMENT
            assert code_of(lambda: begin(GARBAGE, metadata=token, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
            assert health_pb2.HealthCheckResponse.FromString(
                channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)).status == \
                health_pb2.HealthCheckResponse.SERVING  # well-formed requests are untouched
    finally:
        srv.stop(0)
    assert_no_traceback(caplog)


def test_the_log_line_is_rate_limited(caplog):
    now = [100.0]
    logger = logging.getLogger("test.decoding")
    limited = RateLimitedLog(logger, interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.decoding"):
        assert limited.warning("bad request %s", 1)
        now[0] += 59
        assert not limited.warning("bad request %s", 2)
        assert not limited.warning("bad request %s", 3)
        now[0] += 1
        assert limited.warning("bad request %s", 4)
    assert [r.getMessage() for r in caplog.records] == ["bad request 1",
                                                         "bad request 4 (2 more since the last such line)"]
