"""The services over real gRPC on 127.0.0.1:0: the happy path, and every kind of bad input getting a clear
status while the coordinator keeps serving and its pools and registry stay intact."""

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aal_rpc.chunking import CHUNK_BYTES, crc32_of, crc32c_of, sha256_hex
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import (annotation_pb2, annotation_pb2_grpc, selection_pb2, selection_pb2_grpc, training_pb2,
                              training_pb2_grpc)
from aal_rpc.serde import weights_to_bytes
from aal_rpc.types import Payload
from tests.conftest import TASK, code_of, wait_until


@pytest.fixture
def env(grpc_coordinator):
    address, srv = grpc_coordinator
    client = CoordinatorClient(address, retry_for=1.0)
    annot = AnnotationClient(address, "alice", retry_for=1.0)
    channel = grpc.insecure_channel(address)
    yield address, srv, client, annot, channel
    client.close()
    annot.close()
    channel.close()


def queue_items(client, ids, version=0):
    x = np.zeros(TASK.input_shape, np.float32)
    return client.submit_candidates(worker_id="w", strategy="margin", model_version=version,
                                    candidates=[(i, Payload.from_array(x), 0.5) for i in ids])


def weights():
    return weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())


def test_task_stats_and_health(env):
    address, srv, client, annot, channel = env
    assert client.task() == TASK
    assert annot.task() == TASK
    assert client.stats().labeled == 0
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_lease_submit_and_idempotent_resubmission(env):
    _, _, client, annot, _ = env
    assert queue_items(client, ["1", "2"]).accepted == 2
    q = annot.lease(wait_seconds=1)
    assert q.item_id in {"1", "2"} and q.array().shape == TASK.input_shape
    first = annot.submit(q, 4)
    again = annot.submit(q, 4)
    assert first.seq == again.seq and not first.duplicate and again.duplicate
    assert client.stats().labeled == 1
    [rec] = list(client.export())
    assert (rec.item_id, rec.label, rec.annotator_id, rec.provenance.strategy) == (q.item_id, 4, "alice", "margin")


def test_empty_pool_long_poll_answers_not_found_flag(env):
    _, _, _, annot, _ = env
    assert annot.lease(wait_seconds=0.2) is None


def test_bad_annotation_input_gets_clear_statuses(env):
    _, _, client, annot, channel = env
    stub = annotation_pb2_grpc.AnnotationServiceStub(channel)
    queue_items(client, ["1"])
    q = annot.lease()
    assert code_of(lambda: annot.submit(q, 10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.SubmitLabel(annotation_pb2.SubmitLabelRequest(
        lease_id="x", item_id="nope", label=1, annotator_id="alice"), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.SubmitLabel(annotation_pb2.SubmitLabelRequest(
        lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="bob"), timeout=5)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(lambda: stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id=""), timeout=5)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(
        annotator_id="a", wait_seconds=1e9), timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    s = client.stats()
    assert (s.labeled, s.leased) == (0, 1)
    assert annot.submit(q, 2).seq == 1  # still serving, lease intact


def test_expired_lease_gets_failed_precondition(env):
    address, _, client, _, _ = env
    short = AnnotationClient(address, "carol", lease_seconds=0.2, retry_for=1.0)
    queue_items(client, ["5"])
    q = short.lease()
    assert wait_until(lambda: client.stats().leased == 0, timeout=10)  # the lease expired and its item returned
    assert code_of(lambda: short.submit(q, 1)) == grpc.StatusCode.FAILED_PRECONDITION
    short.close()
    assert client.stats().labeled == 0


def test_release_and_skip(env):
    _, _, client, annot, _ = env
    queue_items(client, ["1"])
    q = annot.lease()
    annot.release(q)
    assert client.stats().queued == 1
    q = annot.lease()
    annot.skip(q)
    s = client.stats()
    assert (s.queued, s.skipped) == (0, 1)


def test_upload_download_round_trip_in_chunks(env):
    _, _, client, _, channel = env
    data = weights()
    info = client.upload_model(data, server_id="s0", trained_seq=0, num_labels=0, architecture="mlp",
                               metrics={"accuracy": 0.25})
    assert info.version == 1 and info.size_bytes == len(data) and info.metrics["accuracy"] == 0.25
    stub = selection_pb2_grpc.SelectionServiceStub(channel)
    msgs = list(stub.DownloadModel(selection_pb2.DownloadModelRequest(version=0), timeout=10))
    assert msgs[0].WhichOneof("part") == "info"
    assert (msgs[0].crc32, msgs[0].crc32c) == (crc32_of(data), crc32c_of(data))  # the transfer's two checks
    assert all(len(m.chunk) <= CHUNK_BYTES for m in msgs[1:])
    got_info, got = client.download_model(1)
    assert got == data and got_info.sha256 == sha256_hex(data)
    assert client.latest_model().version == 1
    assert code_of(lambda: client.download_model(7)) == grpc.StatusCode.NOT_FOUND


def _upload(channel, header, chunks):
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    reqs = [training_pb2.UploadModelRequest(header=header)] + [training_pb2.UploadModelRequest(chunk=c)
                                                                for c in chunks]
    return stub.UploadModel(iter(reqs), timeout=20)


def test_bad_uploads_are_rejected_and_registry_unchanged(env):
    _, _, client, _, channel = env
    import torch
    good = weights()
    sd = build_model("mlp", TASK.input_shape, 5).state_dict()  # wrong number of classes
    wrong = weights_to_bytes(sd)

    def header(data, **kw):
        return training_pb2.UploadHeader(**{"server_id": "s", "architecture": "mlp", "size_bytes": len(data),
                                            "sha256": sha256_hex(data), **kw})

    assert code_of(lambda: _upload(channel, header(wrong), [wrong])) == grpc.StatusCode.INVALID_ARGUMENT
    # truncated: the header announces more bytes than arrive
    assert code_of(lambda: _upload(channel, header(good), [good[:1000]])) == grpc.StatusCode.INVALID_ARGUMENT
    # corrupted: right length, wrong digest
    assert code_of(lambda: _upload(channel, header(good), [b"\0" * len(good)])) == grpc.StatusCode.INVALID_ARGUMENT
    # oversized chunk (the wire limit lets 2 MiB through; the contract does not)
    big = torch.zeros(1)
    assert code_of(lambda: _upload(channel, header(good), [good + b"\0" * (2 << 20)])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: _upload(channel, header(good, architecture="cnn"), [good])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    assert code_of(lambda: stub.UploadModel(iter([training_pb2.UploadModelRequest(chunk=good[:10])]),
                                            timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    del big
    assert client.models() == []
    assert client.stats().models == 0


def test_oversized_message_gets_resource_exhausted(env):
    _, _, client, _, channel = env
    stub = selection_pb2_grpc.SelectionServiceStub(channel)
    huge = selection_pb2.Candidate(item_id="1", payload={"tensor": {"data": b"\0" * (5 << 20), "dtype": "uint8",
                                                                    "shape": [5 << 20]}})
    req = selection_pb2.SubmitCandidatesRequest(worker_id="w", strategy="x", candidates=[huge])
    assert code_of(lambda: stub.SubmitCandidates(req, timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.stats().queued == 0


def test_bad_candidates_get_invalid_argument(env):
    _, _, client, _, channel = env
    stub = selection_pb2_grpc.SelectionServiceStub(channel)

    def submit(payload):
        req = selection_pb2.SubmitCandidatesRequest(worker_id="w", strategy="x", candidates=[
            selection_pb2.Candidate(item_id="1", payload=payload)])
        return stub.SubmitCandidates(req, timeout=5)

    inconsistent = {"tensor": {"data": b"\0" * 3, "dtype": "float32", "shape": [1, 8, 8]}}
    assert code_of(lambda: submit(inconsistent)) == grpc.StatusCode.INVALID_ARGUMENT
    pickled = {"tensor": {"data": b"\0" * 8, "dtype": "object", "shape": [1]}}
    assert code_of(lambda: submit(pickled)) == grpc.StatusCode.INVALID_ARGUMENT
    wrong_shape = {"tensor": {"data": b"\0" * 16, "dtype": "float32", "shape": [4]}}
    assert code_of(lambda: submit(wrong_shape)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.GetShardState(selection_pb2.GetShardStateRequest(shard_index=3, num_shards=2),
                                              timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    assert client.stats().queued == 0


def test_label_stream_follows_new_labels(env):
    _, _, client, annot, _ = env
    queue_items(client, ["1", "2", "3"])
    annot.submit(annot.lease(), 1)
    stream = client.stream_labels(0, follow=True, timeout=20)
    first = next(stream)
    assert first.seq == 1
    annot.submit(annot.lease(), 2)
    second = next(stream)
    assert (second.seq, second.label) == (2, 2) and second.payload.tensor.shape == [1, 8, 8]
    stream.cancel()


def test_a_download_chunk_is_read_without_parsing_and_checked_by_crc32():
    from aal_rpc.chunking import assemble
    from aal_rpc.client.coordinator import download_part
    from aal_rpc.errors import InvalidArgument
    from aal_rpc.proto.v1 import selection_pb2

    for n in (0, 1, 127, 128, 16_383, 16_384, 1 << 20):  # lengths whose varints take one to three bytes
        raw = selection_pb2.DownloadModelResponse(chunk=b"w" * n).SerializeToString()
        part = download_part(raw)
        assert isinstance(part, memoryview) and bytes(part) == b"w" * n
    head = selection_pb2.DownloadModelResponse(crc32=7)
    head.info.version = 3
    assert download_part(head.SerializeToString()) == head
    data = bytes(range(256)) * 20_000  # 5 MB: received into huge pages where the kernel has them
    chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    crc = crc32_of(data)
    got = assemble(iter(chunks), size_bytes=len(data), crc32=crc, max_bytes=1 << 30)
    assert got == data and not got.readonly
    flipped = bytearray(chunks[1])
    flipped[5] ^= 1
    with pytest.raises(InvalidArgument, match="CRC-32"):
        assemble(iter([chunks[0], bytes(flipped), *chunks[2:]]), size_bytes=len(data), crc32=crc, max_bytes=1 << 30)
    with pytest.raises(InvalidArgument, match="truncated"):
        assemble(iter(chunks[:1]), size_bytes=len(data), crc32=crc, max_bytes=1 << 30)


def test_a_download_is_checked_by_crc32c_when_the_coordinator_sends_one_and_by_crc32_otherwise(monkeypatch):
    from aal_rpc import chunking
    from aal_rpc.chunking import assemble
    from aal_rpc.errors import InvalidArgument

    assert chunking.FAST_CRC32C  # google-crc32c's C implementation: else downloads fall back to zlib's CRC-32
    data = bytes(range(256)) * 12_000
    chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    flipped = [chunks[0], bytes([chunks[1][0] ^ 1]) + chunks[1][1:], *chunks[2:]]
    crc, crcc = crc32_of(data), crc32c_of(data)
    assert crc != crcc
    assert assemble(iter(chunks), size_bytes=len(data), crc32=crc, crc32c=crcc, max_bytes=1 << 30) == data
    with pytest.raises(InvalidArgument, match="CRC-32C"):
        assemble(iter(flipped), size_bytes=len(data), crc32=crc, crc32c=crcc, max_bytes=1 << 30)
    with pytest.raises(InvalidArgument, match="CRC-32C"):  # the CRC-32C is the one checked
        assemble(iter(chunks), size_bytes=len(data), crc32=crc, crc32c=crcc ^ 1, max_bytes=1 << 30)
    # an older coordinator (no CRC-32C), or a client without the C implementation: zlib's CRC-32
    assert assemble(iter(chunks), size_bytes=len(data), crc32=crc, max_bytes=1 << 30) == data
    monkeypatch.setattr(chunking, "FAST_CRC32C", False)
    assert assemble(iter(chunks), size_bytes=len(data), crc32=crc, crc32c=crcc ^ 1, max_bytes=1 << 30) == data
    with pytest.raises(InvalidArgument, match="CRC-32 "):
        assemble(iter(flipped), size_bytes=len(data), crc32=crc, crc32c=crcc, max_bytes=1 << 30)
