"""Assembling a coordinator process: store, domain core, servicers, health and reflection, and the optional
plaintext health-only port for probes that cannot speak TLS."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aal_rpc.coordinator.contract import Coordinator
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.coordinator.decoding import RequestDecodingInterceptor
from aal_rpc.coordinator.metrics import CoordinatorMetrics
from aal_rpc.coordinator.servicers import (UPLOAD_THREADS, AdminServicer, AnnotationServicer, SelectionServicer,
                                           TrainingServicer)
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.grpc_utils import DEFAULT_MAX_WORKERS, create_server, server_loop
from aal_rpc.handlers import SerializedResponses
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import Principal, ServerTLS, TokenAuthInterceptor
from aal_rpc.types import Task

SERVICE_NAMES = (
    annotation_pb2.DESCRIPTOR.services_by_name["AnnotationService"].full_name,
    training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    selection_pb2.DESCRIPTOR.services_by_name["SelectionService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class CoordinatorServer:
    """A serving coordinator: its asyncio gRPC server(s) run on the process's server loop (grpc_utils.server_loop),
    its store work on `executor`'s threads. `stop` may be called from any thread but the loop's."""

    server: grpc.aio.Server
    port: int
    coordinator: Coordinator
    health: health.aio.HealthServicer
    metrics: CoordinatorMetrics
    executor: ThreadPoolExecutor
    uploads: ThreadPoolExecutor
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    def stop(self, grace: float | None = 1.0) -> None:
        server_loop().run(self._stop(grace))
        self.coordinator.close()  # wakes what still waits on the store's threads
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.uploads.shutdown(wait=True, cancel_futures=True)

    async def _stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()  # probes see NOT_SERVING while calls drain
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


def is_database_url(store: str | None) -> TypeGuard[str]:
    return store is not None and store.startswith(("postgresql://", "postgres://"))


def open_coordinator(store: str | None, data_dir: Path | None, task: Task, config: CoordinatorConfig,
                     observer=None) -> Coordinator:
    """The embedded coordinator on SQLite under `data_dir`, or, for a postgresql:// URL, the shared-database
    coordinator that several replicas can run at once."""
    if is_database_url(store):
        from aal_rpc.coordinator.postgres_store import PostgresStore
        from aal_rpc.coordinator.postgres import SharedCoordinator

        pg = PostgresStore(store)
        try:
            return SharedCoordinator(pg, task, config, observer=observer)
        except Exception:
            pg.close()
            raise
    if data_dir is None:
        raise ValueError("the embedded store needs a data dir (--data-dir)")
    return EmbeddedCoordinator(SqliteStore(Path(data_dir)), task, config, observer=observer)


async def _start_health_server(address: str, health_servicer: health.aio.HealthServicer) -> tuple[grpc.aio.Server, int]:
    """A started plaintext server on `address` that answers grpc.health.v1 Check and nothing else.

    Kubelet's gRPC probes cannot speak TLS, so with TLS on the main port they are pointed here. It is safe in
    plaintext: it takes no token, reads nothing but the serving status of the coordinator's services, and
    changes nothing. It shares `health_servicer` with the main port, so a draining coordinator shows
    NOT_SERVING here too. Watch is left out: a probe never needs it.
    """
    check = grpc.unary_unary_rpc_method_handler(
        health_servicer.Check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
    server = create_server(interceptors=[RequestDecodingInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(health.SERVICE_NAME, {"Check": check}),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    await server.start()
    return server, port


def create_coordinator_server(address: str, data_dir: Path | None, task: Task,
                              config: CoordinatorConfig = CoordinatorConfig(),
                              max_workers: int = DEFAULT_MAX_WORKERS,
                              tokens: Mapping[str, Principal | str] | None = None,
                              tls: ServerTLS | None = None, store: str | None = None,
                              health_address: str | None = None) -> CoordinatorServer:
    """Open the store and bind `address` (port 0 picks a free port). The server is started, serving.

    `store` is None (SQLite under `data_dir`) or a postgresql:// URL. `max_workers` threads run the store's
    work; calls that wait hold none. With `tokens` (token -> Principal or role name), every call but health
    needs a bearer token of a role allowed to make it; with `tls`, the port speaks TLS (mutual TLS when it
    names a client CA). With `health_address`, the health service's Check is served there too, in plaintext
    (see _start_health_server).
    """
    metrics = CoordinatorMetrics()
    coordinator = open_coordinator(store, data_dir, task, config, observer=metrics)
    return serve_coordinator(address, coordinator, metrics, max_workers=max_workers, tokens=tokens, tls=tls,
                             health_address=health_address)


def serve_coordinator(address: str, coordinator: Coordinator, metrics: CoordinatorMetrics, *,
                      max_workers: int = DEFAULT_MAX_WORKERS, tokens: Mapping[str, Principal | str] | None = None,
                      tls: ServerTLS | None = None, health_address: str | None = None) -> CoordinatorServer:
    """Serve an open coordinator as `create_coordinator_server` does (`metrics` its observer, or one that counts
    calls only); it is closed if the server does not start."""
    metrics.bind(coordinator)
    executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="store")
    uploads = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")
    try:
        return server_loop().run(_start(address, coordinator, metrics, executor, uploads, tokens, tls,
                                        health_address))
    except BaseException:
        coordinator.close()
        executor.shutdown(cancel_futures=True)
        uploads.shutdown(cancel_futures=True)
        raise


async def _start(address, coordinator, metrics, executor, uploads, tokens, tls, health_address) -> CoordinatorServer:
    # Decoding wraps what auth returns: a refused call never decodes its request (auth's refusal takes raw
    # bytes), so garbage without a valid token gets UNAUTHENTICATED, garbage with one INVALID_ARGUMENT.
    interceptors = [metrics.interceptor(), RequestDecodingInterceptor()]
    if tokens:
        interceptors.append(TokenAuthInterceptor(tokens))
    interceptors.append(SerializedResponses())
    server = create_server(interceptors=interceptors)
    health_servicer = health.aio.HealthServicer()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    annotation_pb2_grpc.add_AnnotationServiceServicer_to_server(
        AnnotationServicer(coordinator, executor, observe_command=metrics.session_command), server)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(coordinator, executor, uploads), server)
    selection_pb2_grpc.add_SelectionServiceServicer_to_server(SelectionServicer(coordinator, executor), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(coordinator, executor), server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    health_server, health_port = None, None
    if health_address:
        health_server, health_port = await _start_health_server(health_address, health_servicer)
    try:
        await server.start()
    except BaseException:
        if health_server is not None:
            await health_server.stop(0)
        raise
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoordinatorServer(server, port, coordinator, health_servicer, metrics, executor, uploads, health_server,
                             health_port)
