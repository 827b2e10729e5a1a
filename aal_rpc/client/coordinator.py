"""The client the servers (trainers), workers (selectors) and operators use to talk to the coordinator.

Calls retry through outages by the shared policy (client/retry.py): for `retry_for` seconds, or without limit
when it is None, as the daemons run it. Streams (L's records, exports) resume after the last record received.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import grpc

from aal_rpc import serde
from aal_rpc.chunking import CHUNK_BYTES, assemble, iter_chunks, sha256_hex
from aal_rpc.client.retry import ChannelClient, ResumableStream
from aal_rpc.grpc_utils import LONG_POLL_MARGIN_SECONDS
from aal_rpc.security import ClientSecurity
from aal_rpc.proto.v1 import admin_pb2, selection_pb2, selection_pb2_grpc, training_pb2, training_pb2_grpc
from aal_rpc.types import LabeledRecord, ModelInfo, Payload, Stats, Task

CALL_TIMEOUT = 30.0  # seconds for one call, long polls excepted (they take their wait + LONG_POLL_MARGIN_SECONDS)
TRANSFER_TIMEOUT = 600.0  # a whole weight upload or download, or one stretch of an export
DEFAULT_RETRY_FOR = 120.0
MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3
SUBMIT_BATCH_BYTES = 3 * 1024 * 1024  # candidate payloads per SubmitCandidates call, under the 4 MiB limit


DOWNLOAD_METHOD = "/{}/DownloadModel".format(selection_pb2.DESCRIPTOR.services_by_name["SelectionService"].full_name)
_CHUNK_TAG = 2 << 3 | 2  # DownloadModelResponse.chunk: field 2, length-delimited


def download_part(raw: bytes) -> memoryview | selection_pb2.DownloadModelResponse:
    """A DownloadModel message: a chunk as a view of the received bytes (no copy: parsing would copy each MiB
    twice, more than the transfer costs), anything else parsed.

    A chunk message is exactly the chunk field: its tag, its length as a varint, its bytes (protobuf encoding).
    """
    if raw[:1] == bytes((_CHUNK_TAG,)):
        length, shift, pos = 0, 0, 1
        while pos < len(raw) and shift < 64:
            byte = raw[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if pos + length == len(raw):
                    return memoryview(raw)[pos:]
                break
    return selection_pb2.DownloadModelResponse.FromString(raw)


class CoordinatorClient(ChannelClient):
    """A client for servers, workers and operators.

    Parameters
    ----------
    target:
        The coordinator's HOST:PORT.
    retry_for:
        Seconds to keep retrying a call through an outage (UNAVAILABLE, DEADLINE_EXCEEDED); None: no limit.
    wait_for_ready:
        False: a call fails at once while the coordinator cannot be reached (one-shot commands).
    security:
        Bearer token and TLS settings (aal_rpc.security.ClientSecurity); None for a plain local channel.
    """

    def __init__(self, target: str, *, retry_for: float | None = DEFAULT_RETRY_FOR,
                 channel: grpc.Channel | None = None, security: ClientSecurity | None = None,
                 wait_for_ready: bool = True):
        super().__init__(target, retry_for=retry_for, channel=channel, security=security,
                         wait_for_ready=wait_for_ready)
        self._training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self._selection = selection_pb2_grpc.SelectionServiceStub(self._channel)
        # DownloadModel with the chunks left in the received bytes (see download_part)
        self._download = self._channel.unary_stream(
            DOWNLOAD_METHOD, request_serializer=selection_pb2.DownloadModelRequest.SerializeToString,
            response_deserializer=download_part, _registered_method=True)

    def _call(self, method, request, timeout: float = CALL_TIMEOUT):
        return super()._call(method, request, timeout)

    # -- admin ----------------------------------------------------------------------------------------

    def task(self) -> Task:
        return serde.task_from_proto(self._call(self._admin.GetTask, admin_pb2.GetTaskRequest()).task)

    def weights_fingerprint(self) -> str:
        """The coordinator's fingerprint of the task's architecture (serde.spec_fingerprint); "" from one that
        predates it."""
        return self._call(self._admin.GetTask, admin_pb2.GetTaskRequest()).weights_fingerprint

    def stats(self) -> Stats:
        return serde.stats_from_proto(self._call(self._admin.GetStats, admin_pb2.GetStatsRequest()))

    def models(self) -> list[ModelInfo]:
        """The whole registry in version order (ListModels answers a page at a time)."""
        infos: list[ModelInfo] = []
        while True:
            resp = self._call(self._admin.ListModels, admin_pb2.ListModelsRequest(
                after_version=infos[-1].version if infos else 0))
            infos.extend(serde.model_info_from_proto(m) for m in resp.models)
            if not resp.more or not resp.models:
                return infos

    def export(self, *, include_payload: bool = True, latest_only: bool = False) -> Iterator[LabeledRecord]:
        """Every record of L in order (`latest_only`: without the records corrections superseded, i.e. each item's
        current label once). Resumes from the last record received if the stream breaks."""
        stream = ResumableStream(self, lambda after: self._admin.ExportLabels(
            admin_pb2.ExportLabelsRequest(after_seq=after, include_payload=include_payload, latest_only=latest_only),
            timeout=TRANSFER_TIMEOUT, wait_for_ready=self.wait_for_ready), after_seq=0)
        for msg in stream:
            yield serde.record_from_proto(msg)

    def import_labels(self, items: Iterable[tuple[str, int, Payload] | tuple[str, int, Payload, str]], *,
                      annotator_id: str = "import") -> admin_pb2.ImportLabelsResponse:
        """Import labels the pool already has (an admin token): (item_id, label, payload[, annotator_id]) tuples,
        streamed one message each as the coordinator takes them. It checks the whole import before writing any of
        it and skips items already labeled; the answer counts them (imported, skipped, first_seq, last_seq).

        Retried through an outage when `items` can be iterated again (a list); a one-shot iterator is sent once.
        If iterating `items` raises, the call is cancelled before its end is sent, so nothing is imported, and
        that error is raised here.
        """
        def once():
            failed: list[Exception] = []
            started = threading.Event()
            call: list[grpc.Future] = []

            def requests():
                try:
                    for item_id, label, payload, *who in items:
                        yield admin_pb2.ImportLabelsRequest(item_id=item_id, label=int(label),
                                                            payload=serde.payload_to_proto(payload),
                                                            annotator_id=who[0] if who else annotator_id)
                except Exception as exc:  # noqa: BLE001 - raised to the caller below, once the call is cancelled
                    failed.append(exc)
                    started.wait()
                    call[0].cancel()  # before the end of the stream is sent: the coordinator never imports it

            call.append(self._admin.ImportLabels.future(requests(), timeout=TRANSFER_TIMEOUT,
                                                        wait_for_ready=self.wait_for_ready))
            started.set()
            try:
                return call[0].result()
            except grpc.FutureCancelledError:
                if failed:
                    raise failed[0] from None
                raise

        return once() if iter(items) is items else self._retrying(once)

    # -- training -------------------------------------------------------------------------------------

    def stream_labels(self, after_seq: int, *, follow: bool, timeout: float | None = None,
                      include_payload: bool = True) -> grpc.Call:
        """The raw stream of L's records after `after_seq`, not resumed (follow_labels resumes it)."""
        return self._training.StreamLabels(training_pb2.StreamLabelsRequest(
            after_seq=after_seq, follow=follow, omit_payload=not include_payload),
            timeout=timeout, wait_for_ready=self.wait_for_ready)

    def follow_labels(self, after_seq: int, *, include_payload: bool = True) -> ResumableStream:
        """L's records (StreamLabelsResponse messages) after `after_seq`, then each new one as it is committed,
        without end: resumed after the last record received whenever the stream breaks. `cancel()` ends it.
        Without payloads, a worker's token may read it too."""
        return ResumableStream(self, lambda after: self.stream_labels(after, follow=True,
                                                                      include_payload=include_payload),
                               after_seq=after_seq)

    def upload_model(self, data: bytes, *, server_id: str, trained_seq: int, num_labels: int, architecture: str,
                     metrics: dict[str, float]) -> ModelInfo:
        header = training_pb2.UploadHeader(server_id=server_id, trained_seq=trained_seq, num_labels=num_labels,
                                           architecture=architecture, metrics=metrics, size_bytes=len(data),
                                           sha256=sha256_hex(data))

        def requests():
            yield training_pb2.UploadModelRequest(header=header)
            for chunk in iter_chunks(data, CHUNK_BYTES):
                yield training_pb2.UploadModelRequest(chunk=chunk)

        resp = self._retrying(lambda: self._awaited(lambda: self._training.UploadModel.future(
            requests(), timeout=TRANSFER_TIMEOUT, wait_for_ready=self.wait_for_ready)))
        return serde.model_info_from_proto(resp.model)

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        """(0, "") when this server may begin a training round on `num_labels` labels now, else (seconds to
        wait before asking again, why). A coordinator without BeginRound (older) always says begin."""
        try:
            resp = self._call(self._training.BeginRound, training_pb2.BeginRoundRequest(
                server_id=server_id, num_labels=num_labels, round_seconds=round_seconds), CALL_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return 0.0, ""
            raise
        return resp.wait_seconds, resp.reason

    # -- selection ------------------------------------------------------------------------------------

    def latest_model(self, *, after_version: int = 0, wait_seconds: float = 0.0) -> ModelInfo | None:
        """The latest model if newer than `after_version`, waiting up to `wait_seconds` for one; else None."""
        resp = self._call(self._selection.GetLatestModel, selection_pb2.GetLatestModelRequest(
            after_version=after_version, wait_seconds=wait_seconds), wait_seconds + LONG_POLL_MARGIN_SECONDS)
        return serde.model_info_from_proto(resp.model) if resp.found else None

    def download_model(self, version: int = 0) -> tuple[ModelInfo, memoryview]:
        """A version's entry and weights (0: the latest). The weights are received in place into memory allocated
        once (chunking.assemble), their CRC-32C (or CRC-32) checked as they arrive (InvalidArgument on a mismatch);
        serde.weights_from_bytes reads them without copying."""
        def once():
            request = selection_pb2.DownloadModelRequest(version=version)
            with self._on_its_way(lambda: self._download(request, timeout=TRANSFER_TIMEOUT,
                                                         wait_for_ready=self.wait_for_ready)) as stream:
                first = next(stream)
                if not isinstance(first, selection_pb2.DownloadModelResponse) or first.WhichOneof("part") != "info":
                    raise ValueError("download stream did not start with the model info")
                info = serde.model_info_from_proto(first.info)
                data = assemble(stream, size_bytes=info.size_bytes, crc32=first.crc32, max_bytes=MAX_DOWNLOAD_BYTES,
                                crc32c=first.crc32c if first.HasField("crc32c") else None)
                return info, data

        return self._retrying(once)

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[tuple]) -> selection_pb2.SubmitCandidatesResponse:
        """Submit (item_id, payload, score[, cluster[, guess, guess_probability]]) tuples, split into calls that stay
        under the message limit. `guess`: the class the model predicts (None: no guess), with its probability."""
        total = selection_pb2.SubmitCandidatesResponse()
        batch: list[selection_pb2.Candidate] = []
        size = 0

        def flush():
            if not batch:
                return
            r = self._call(self._selection.SubmitCandidates, selection_pb2.SubmitCandidatesRequest(
                worker_id=worker_id, strategy=strategy, model_version=model_version, candidates=batch))
            total.accepted += r.accepted
            total.refreshed += r.refreshed
            total.rejected += r.rejected
            total.evicted += r.evicted

        for item_id, payload, score, *extra in candidates:
            cluster = extra[0] if extra else None
            guess, probability = (extra[1], extra[2]) if len(extra) > 2 else (None, 0.0)
            msg = selection_pb2.Candidate(item_id=item_id, payload=serde.payload_to_proto(payload), score=score,
                                          cluster=cluster, guess=guess,
                                          guess_probability=probability if guess is not None else 0.0)
            n = msg.ByteSize()
            if batch and size + n > SUBMIT_BATCH_BYTES:
                flush()
                batch, size = [], 0
            batch.append(msg)
            size += n
        flush()
        return total

    def shard_state(self, *, shard_index: int, num_shards: int, labeled_after_seq: int,
                    model_version: int) -> selection_pb2.GetShardStateResponse:
        return self._call(self._selection.GetShardState, selection_pb2.GetShardStateRequest(
            shard_index=shard_index, num_shards=num_shards, labeled_after_seq=labeled_after_seq,
            model_version=model_version))
