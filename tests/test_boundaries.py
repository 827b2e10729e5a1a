"""What a hostile or broken client sends never corrupts L, S or the registry, nor stops training: each request
below (the outside probe's findings, issue 10) gets a clear status, and memory and store stay equal. Every test
runs over real gRPC against both backends."""

import io
import sqlite3
import tempfile
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from aal_rpc.chunking import CHUNK_BYTES, iter_chunks, sha256_hex
from aal_rpc.client import AnnotationClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, common_pb2,
                              selection_pb2, selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.serde import payload_to_proto, weights_to_bytes
from aal_rpc.types import Payload
from tests.conftest import TASK, code_of, fill_labels

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    """A coordinator on each backend, a raw channel and stubs for every service."""
    store = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(pool_capacity=64, lease_seconds=30), store=store)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield Env(srv, channel)
    channel.close()
    srv.stop(0)


class Env:
    def __init__(self, srv, channel):
        self.srv, self.c, self.channel = srv, srv.coordinator, channel
        self.address = f"127.0.0.1:{srv.port}"
        self.selection = selection_pb2_grpc.SelectionServiceStub(channel)
        self.training = training_pb2_grpc.TrainingServiceStub(channel)
        self.annotation = annotation_pb2_grpc.AnnotationServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def submit(self, *candidates, version=0):
        return self.selection.SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
            worker_id="w", strategy="margin", model_version=version, candidates=list(candidates)), timeout=10)

    def upload(self, data, *, num_labels=0, trained_seq=0, metrics=None, size=None, sha=None):
        header = training_pb2.UploadHeader(server_id="s", trained_seq=trained_seq, num_labels=num_labels,
                                           architecture=TASK.architecture, metrics=metrics or {},
                                           size_bytes=len(data) if size is None else size,
                                           sha256=sha or sha256_hex(data))
        parts = [training_pb2.UploadModelRequest(header=header)]
        parts += [training_pb2.UploadModelRequest(chunk=c) for c in iter_chunks(data)]
        return self.training.UploadModel(iter(parts), timeout=30)

    def consistent(self):
        """Stats, export and a restart-free reading of S agree; returns (labeled, queued + leased)."""
        s = self.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=10)
        exported = list(self.admin.ExportLabels(admin_pb2.ExportLabelsRequest(), timeout=10))
        assert s.labeled == len(exported) == len({r.item_id for r in exported})
        assert [r.seq for r in exported] == list(range(1, len(exported) + 1))
        return s.labeled, s.queued + s.leased


def candidate(item_id, score=0.5, png=b"", x=None):
    x = np.full(TASK.input_shape, 0.25, np.float32) if x is None else x
    return selection_pb2.Candidate(item_id=item_id, score=score,
                                   payload=payload_to_proto(Payload.from_array(x, image=png)))


def weights(**override):
    sd = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()
    sd.update(override)
    return weights_to_bytes(sd)


def png(size=(8, 8)):
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, format="PNG")
    return buf.getvalue()


# -- 1. non-finite scores; a write that fails to commit changes nothing ---------------------------------------

@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_a_batch_with_a_non_finite_score_is_refused_whole(env, score):
    env.submit(candidate("1"))
    before = env.consistent()
    assert code_of(lambda: env.submit(candidate("2"), candidate("3", score=score), candidate("4"))) == INVALID
    assert env.consistent() == before == (0, 1)
    with AnnotationClient(env.address, "a") as a:
        q = a.lease()
        assert q.item_id == "1" and a.lease() is None  # nothing of the refused batch reached S
        a.submit(q, 2)
    assert env.consistent() == (1, 0)


def test_a_label_whose_commit_fails_is_not_acknowledged_and_changes_nothing(tmp_path):
    """The embedded store refuses a write (here a trigger; in life a full disk): the annotator gets UNAVAILABLE,
    memory is reloaded from the store, the lease still holds, and the retry lands once."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30))
    try:
        address = f"127.0.0.1:{srv.port}"
        with grpc.insecure_channel(address) as channel:
            env = Env(srv, channel)
            env.submit(candidate("1"), candidate("2"))
            db = sqlite3.connect(tmp_path / "data" / "aal.sqlite3")
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON labels BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            db.commit()
            with AnnotationClient(address, "a", retry_for=0) as a:
                q = a.lease()
                assert code_of(lambda: a.submit(q, 3)) == grpc.StatusCode.UNAVAILABLE
                assert env.consistent() == (0, 2)
                stats = srv.coordinator.stats()
                assert (stats.labeled, stats.leased, stats.last_seq) == (0, 1, 0)
                db.execute("DROP TRIGGER refuse")
                db.commit()
                first, again = a.submit(q, 3), a.submit(q, 3)
                assert (first.seq, first.duplicate, again.seq, again.duplicate) == (1, False, 1, True)
            db.close()
            assert env.consistent() == (1, 1)
    finally:
        srv.stop(0)


def test_candidates_whose_commit_fails_are_not_queued(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            env = Env(srv, channel)
            db = sqlite3.connect(tmp_path / "data" / "aal.sqlite3")
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON queries BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            db.commit()
            assert code_of(lambda: env.submit(candidate("1"))) == grpc.StatusCode.UNAVAILABLE
            assert srv.coordinator.stats().queued == 0 and srv.coordinator.lease("a") is None
            db.execute("DROP TRIGGER refuse")
            db.commit()
            db.close()
            assert env.submit(candidate("1")).accepted == 1
    finally:
        srv.stop(0)


# -- 2. no upload or round claim beyond what L holds ------------------------------------------------------------

def test_a_model_cannot_claim_more_labels_than_l_holds(env):
    fill_labels(env.c, 3)
    for num_labels, trained_seq in [(2 ** 63 - 1, 3), (4, 3), (3, 4), (-1, 3)]:
        assert code_of(lambda: env.upload(weights(), num_labels=num_labels, trained_seq=trained_seq)) == INVALID
    assert env.c.registry.list() == []
    assert env.upload(weights(), num_labels=3, trained_seq=3).model.version == 1


def test_a_round_cannot_claim_more_labels_than_l_holds(env):
    fill_labels(env.c, 2)
    ask = lambda n: env.training.BeginRound(training_pb2.BeginRoundRequest(server_id="s", num_labels=n),  # noqa
                                            timeout=10)
    assert code_of(lambda: ask(2 ** 63 - 1)) == INVALID
    assert code_of(lambda: ask(3)) == INVALID
    assert ask(2).wait_seconds == 0  # the honest claim is granted: the refused ones recorded nothing


# -- 3. candidates name a published model -------------------------------------------------------------------------

def test_candidates_of_an_unpublished_model_are_refused(env):
    assert code_of(lambda: env.submit(candidate("1"), version=7)) == INVALID
    assert env.consistent() == (0, 0)
    env.upload(weights())
    assert env.submit(candidate("1"), version=1).accepted == 1


# -- 4. weights: the architecture's dtypes, finite -------------------------------------------------------------

def test_weights_of_another_dtype_or_not_finite_are_refused(env):
    sd = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()
    int8 = weights_to_bytes({k: v.to(torch.int8) for k, v in sd.items()})
    nan = weights(**{"head.weight": torch.full_like(sd["head.weight"], float("nan"))})
    inf = weights(**{"features.1.bias": torch.full_like(sd["features.1.bias"], float("inf"))})
    for data in (int8, nan, inf):
        with pytest.raises(grpc.RpcError) as info:
            env.upload(data)
        assert info.value.code() == INVALID and "weights" in info.value.details()
    assert env.c.registry.list() == [] and env.c.registry.latest() is None


# -- 5. bounded metrics; ListModels pages ----------------------------------------------------------------------

def test_metrics_are_bounded(env):
    many = {f"m{i}": 0.5 for i in range(33)}
    for metrics in (many, {"x" * 65: 0.5}, {"accuracy": float("nan")}):
        assert code_of(lambda: env.upload(weights(), metrics=metrics)) == INVALID
    assert env.c.registry.list() == []


def test_list_models_pages(env):
    for _ in range(3):
        env.upload(weights(), metrics={"accuracy": 0.5})
    first = env.admin.ListModels(admin_pb2.ListModelsRequest(page_size=2), timeout=10)
    assert [m.version for m in first.models] == [1, 2] and first.more
    rest = env.admin.ListModels(admin_pb2.ListModelsRequest(after_version=2, page_size=2), timeout=10)
    assert [m.version for m in rest.models] == [3] and not rest.more
    assert code_of(lambda: env.admin.ListModels(admin_pb2.ListModelsRequest(page_size=10 ** 6), timeout=10)) \
        == INVALID


# -- 6. payloads: valid PNGs of bounded size, finite tensors ------------------------------------------------

def test_payload_pictures_must_be_valid_pngs_of_bounded_size(env):
    rng = np.random.default_rng(0)
    assert code_of(lambda: env.submit(candidate("1", png=rng.bytes(3_500_000)))) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(lambda: env.submit(candidate("1", png=rng.bytes(1000)))) == INVALID
    assert code_of(lambda: env.submit(candidate("1", png=png()[:-20]))) == INVALID  # truncated
    assert code_of(lambda: env.submit(candidate("1", png=png((5000, 5000))))) == INVALID  # too many pixels
    x = np.full(TASK.input_shape, np.nan, np.float32)
    assert code_of(lambda: env.submit(candidate("1", x=x))) == INVALID
    assert env.consistent() == (0, 0)
    assert env.submit(candidate("1", png=png())).accepted == 1


# -- 7. uploads stream to disk ------------------------------------------------------------------------------

def _upload_files(env) -> set[Path]:
    store = env.c.store
    folder = Path(getattr(store, "blob_dir", tempfile.gettempdir()))
    return set(folder.glob("*upload-*.tmp"))


def test_an_upload_streams_to_a_temporary_blob_and_an_abandoned_one_leaves_nothing(env):
    """The coordinator holds one chunk of an upload in memory, not the whole: while an upload is under way its
    bytes are on disk, and when the uploader gives up the temporary blob is removed and nothing is published."""
    before = _upload_files(env)
    size = 8 * CHUNK_BYTES
    sent, resume = threading.Event(), threading.Event()

    def parts():
        header = training_pb2.UploadHeader(server_id="s", architecture=TASK.architecture, size_bytes=size,
                                           sha256="0" * 64)
        yield training_pb2.UploadModelRequest(header=header)
        for i in range(4):
            yield training_pb2.UploadModelRequest(chunk=bytes([i]) * CHUNK_BYTES)
        sent.set()
        resume.wait(30)

    call = env.training.UploadModel.future(parts(), timeout=60)
    assert sent.wait(30)
    grew = None
    for _ in range(300):  # the chunks reach the file as they arrive
        files = _upload_files(env) - before
        if files and (grew := max(f.stat().st_size for f in files if f.exists())) >= 3 * CHUNK_BYTES:
            break
        threading.Event().wait(0.05)
    assert grew is not None and grew >= 3 * CHUNK_BYTES
    call.cancel()
    resume.set()
    for _ in range(300):
        if not _upload_files(env) - before:
            break
        threading.Event().wait(0.05)
    assert not _upload_files(env) - before
    assert env.c.registry.list() == []


def test_a_corrupt_upload_is_refused_and_leaves_no_blob(env):
    before = _upload_files(env)
    data = weights()
    assert code_of(lambda: env.upload(data, sha="f" * 64)) == INVALID
    assert code_of(lambda: env.upload(data, size=len(data) + 10)) == INVALID  # truncated
    assert code_of(lambda: env.upload(b"\x80\x04\x95 not safetensors")) == INVALID
    assert env.c.registry.list() == [] and not _upload_files(env) - before
