"""Role-scoped tokens and TLS / mutual TLS over real gRPC, with certificates generated on the fly."""


import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aal_rpc.cli import admin
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.experiment.processes import read_line
from aal_rpc.grpc_utils import server_loop
from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc
from aal_rpc.security import ClientSecurity, Principal, ServerTLS, allowed_roles, parse_tokens
from aal_rpc.types import Payload
from tests.conftest import TASK, code_of

TOKENS = {"ann-token": "annotator", "wrk-token": "worker", "srv-token": "server", "adm-token": "admin"}


@pytest.fixture
def secured(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens=TOKENS)
    yield f"127.0.0.1:{srv.port}"
    srv.stop(0)


def client(address, token):
    return CoordinatorClient(address, retry_for=0.5, security=ClientSecurity(token=token))


def test_token_file_format():
    assert parse_tokens("annotator:a1\n# comment\nworker:w1\n  admin:x  \nannotator alice a2") == {
        "a1": Principal("annotator"), "w1": Principal("worker"), "x": Principal("admin"),
        "a2": Principal("annotator", "alice")}
    with pytest.raises(ValueError):
        parse_tokens("root:abc")
    assert allowed_roles("/grpc.health.v1.Health/Check") is None
    assert allowed_roles("/aal.v1.AdminService/GetTask") == {"annotator", "worker", "server", "admin"}


def test_missing_or_unknown_token_is_unauthenticated(secured):
    for token in (None, "forged"):
        with AnnotationClient(secured, "a", retry_for=0.5, security=ClientSecurity(token=token)) as a:
            assert code_of(lambda: a.lease()) == grpc.StatusCode.UNAUTHENTICATED
        with client(secured, token) as c:
            assert code_of(c.task) == grpc.StatusCode.UNAUTHENTICATED


def test_roles_are_confined_to_their_service(secured):
    x = Payload.from_array(np.zeros(TASK.input_shape, np.float32))
    with client(secured, "ann-token") as ann:
        assert ann.task() == TASK  # every role may read the task
        assert code_of(ann.stats) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: ann.upload_model(b"x" * 10, server_id="s", trained_seq=0, num_labels=0,
                                                architecture="mlp", metrics={})) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: ann.submit_candidates(worker_id="w", strategy="x", model_version=0,
                                                     candidates=[("1", x, 0.1)])) == grpc.StatusCode.PERMISSION_DENIED
    with client(secured, "srv-token") as srv:
        assert code_of(lambda: srv.submit_candidates(worker_id="w", strategy="x", model_version=0,
                                                     candidates=[("1", x, 0.1)])) == grpc.StatusCode.PERMISSION_DENIED
    with client(secured, "wrk-token") as wrk:
        assert wrk.submit_candidates(worker_id="w", strategy="x", model_version=0,
                                     candidates=[("1", x, 0.1)]).accepted == 1
    with AnnotationClient(secured, "alice", security=ClientSecurity(token="ann-token")) as a:
        q = a.lease()
        assert a.submit(q, 1).seq == 1
    with client(secured, "adm-token") as adm:
        assert adm.stats().labeled == 1
    with client(secured, "wrk-token") as wrk:  # a worker reads L's labels, never its payloads (adaptive re-labeling)
        [record] = list(wrk.stream_labels(0, follow=False, include_payload=False))
        assert record.label == 1 and not record.HasField("payload")
        assert code_of(lambda: list(wrk.stream_labels(0, follow=False))) == grpc.StatusCode.PERMISSION_DENIED
    with client(secured, "ann-token") as ann:
        assert code_of(lambda: list(ann.stream_labels(0, follow=False, include_payload=False))) == (
            grpc.StatusCode.PERMISSION_DENIED)
    channel = grpc.insecure_channel(secured)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    channel.close()


def test_tls_serves_verified_clients_only(tmp_path, certs):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    tls=ServerTLS(certs / "server.pem", certs / "server.key"))
    address = f"127.0.0.1:{srv.port}"
    try:
        with CoordinatorClient(address, security=ClientSecurity(ca=certs / "ca.pem")) as c:
            assert c.task() == TASK
        with CoordinatorClient(address, retry_for=0.5) as plain:
            assert code_of(lambda: plain._admin.GetTask(admin_pb2.GetTaskRequest(), timeout=2)) == \
                grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0)


def test_mutual_tls_requires_a_client_certificate(tmp_path, certs):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens=TOKENS,
                                    tls=ServerTLS(certs / "server.pem", certs / "server.key", certs / "ca.pem"))
    address = f"127.0.0.1:{srv.port}"
    try:
        no_cert = ClientSecurity(token="adm-token", ca=certs / "ca.pem")
        with CoordinatorClient(address, retry_for=0.5, security=no_cert) as c:
            assert code_of(lambda: c._admin.GetStats(admin_pb2.GetStatsRequest(), timeout=2)) == \
                grpc.StatusCode.UNAVAILABLE
        result = CliRunner().invoke(admin.main, [
            "--coordinator", address, "--token", "adm-token", "--tls-ca", str(certs / "ca.pem"),
            "--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client.key"), "stats", "--json"])
        assert result.exit_code == 0, result.output
        assert '"labeled": 0' in result.output
    finally:
        srv.stop(0)


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def test_health_port_answers_probes_in_plaintext_beside_a_tls_port(tmp_path, certs):
    """Kubelet's gRPC probes cannot speak TLS: the health port answers Check in plaintext, from the same
    health servicer (so draining shows there), and serves nothing else."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens=TOKENS,
                                    tls=ServerTLS(certs / "server.pem", certs / "server.key"),
                                    health_address="127.0.0.1:0")
    health_address = f"127.0.0.1:{srv.health_port}"
    try:
        assert srv.health_port not in (None, 0, srv.port)
        assert _health(health_address) == health_pb2.HealthCheckResponse.SERVING
        assert _health(health_address, "aal.v1.AnnotationService") == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(health_address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
            assert code_of(lambda: next(watch)) == grpc.StatusCode.UNIMPLEMENTED
            assert code_of(lambda: admin_pb2_grpc.AdminServiceStub(channel).GetStats(
                admin_pb2.GetStatsRequest(), metadata=(("authorization", "Bearer adm-token"),), timeout=5)) == \
                grpc.StatusCode.UNIMPLEMENTED
        server_loop().run(srv.health.enter_graceful_shutdown())  # what stop() does first, while calls drain
        assert _health(health_address) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        srv.stop(0)


def test_coordinator_warns_when_tokens_travel_in_the_clear(tmp_path, procs):
    tokens = tmp_path / "tokens"
    tokens.write_text("admin:adm-token\n")
    procs.start_coordinator("coordinator", ["--data-dir", tmp_path / "data", "--tokens-file", tokens])
    assert procs.stop("coordinator") == 0
    log = (procs.log_dir / "coordinator.log").read_text()
    assert "tokens travel in the clear" in log and "adm-token" not in log


def test_coordinator_health_port_option(tmp_path, procs, certs):
    proc, _ = procs.start_coordinator("coordinator", [
        "--data-dir", tmp_path / "data", "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
        "--health-port", "0"])
    health_line = read_line(proc)
    assert health_line.startswith("health on 127.0.0.1:")
    assert _health(health_line.removeprefix("health on ")) == health_pb2.HealthCheckResponse.SERVING
    assert procs.stop("coordinator") == 0


def test_a_server_token_trains_publishes_and_reads_the_registry(secured):
    """aal-server with a token of the server role: a round reads the registry (the stop set's agreement with the
    latest model) and servers download models (a published encoder, another server's latest), as workers do."""
    from aal_rpc.selector.loop import Selector, WorkerConfig
    from aal_rpc.trainer.loop import Trainer, TrainerConfig
    from tests.test_loops import DIGITS

    with client(secured, "wrk-token") as wrk:
        Selector(wrk, WorkerConfig(worker_id="w", strategy="random", batch_size=12), dataset=DIGITS).step()
    with AnnotationClient(secured, "alice", security=ClientSecurity(token="ann-token")) as a:
        for _ in range(12):
            q = a.lease()
            a.submit(q, int(DIGITS.y_pool[DIGITS.index_of(q.item_id)]))
    with client(secured, "srv-token") as srv:
        Trainer(srv, TrainerConfig(server_id="s", epochs=1, min_labels=12), dataset=DIGITS).run(max_rounds=1)
        [model] = srv.models()
        info, weights = srv.download_model(model.version)
        assert info.version == model.version and len(weights) == model.size_bytes
    with client(secured, "ann-token") as ann:
        assert code_of(ann.models) == grpc.StatusCode.PERMISSION_DENIED
