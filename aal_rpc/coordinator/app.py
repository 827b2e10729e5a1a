"""Assembling a coordinator process: store, domain core, servicers, health and reflection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aal_rpc.coordinator.core import Coordinator, CoordinatorConfig
from aal_rpc.coordinator.metrics import CoordinatorMetrics
from aal_rpc.coordinator.servicers import (AdminServicer, AnnotationServicer, SelectionServicer,
                                           TrainingServicer)
from aal_rpc.coordinator.store import SqliteStore
from aal_rpc.grpc_utils import DEFAULT_MAX_WORKERS, create_server
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import ServerTLS, TokenAuthInterceptor
from aal_rpc.types import Task

SERVICE_NAMES = (
    annotation_pb2.DESCRIPTOR.services_by_name["AnnotationService"].full_name,
    training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    selection_pb2.DESCRIPTOR.services_by_name["SelectionService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class CoordinatorServer:
    server: grpc.Server
    port: int
    coordinator: Coordinator
    health: health.HealthServicer
    metrics: CoordinatorMetrics

    def stop(self, grace: float | None = 1.0) -> None:
        self.health.enter_graceful_shutdown()  # probes see NOT_SERVING while calls drain
        self.server.stop(grace).wait()
        self.coordinator.close()


def is_database_url(store: str | None) -> bool:
    return bool(store) and store.startswith(("postgresql://", "postgres://"))


def open_coordinator(store: str | None, data_dir: Path | None, task: Task, config: CoordinatorConfig,
                     observer=None) -> Coordinator:
    """The embedded coordinator on SQLite under `data_dir`, or, for a postgresql:// URL, the shared-database
    coordinator that several replicas can run at once."""
    if is_database_url(store):
        from aal_rpc.coordinator.pg_store import PostgresStore
        from aal_rpc.coordinator.shared import SharedCoordinator

        pg = PostgresStore(store)
        try:
            return SharedCoordinator(pg, task, config, observer=observer)
        except Exception:
            pg.close()
            raise
    if data_dir is None:
        raise ValueError("the embedded store needs a data dir (--data-dir)")
    return Coordinator(SqliteStore(Path(data_dir)), task, config, observer=observer)


def create_coordinator_server(address: str, data_dir: Path | None, task: Task,
                              config: CoordinatorConfig = CoordinatorConfig(),
                              max_workers: int = DEFAULT_MAX_WORKERS, tokens: dict[str, str] | None = None,
                              tls: ServerTLS | None = None, store: str | None = None) -> CoordinatorServer:
    """Open the store and bind `address` (port 0 picks a free port). The server is started, serving.

    `store` is None (SQLite under `data_dir`) or a postgresql:// URL. With `tokens` (token -> role), every call
    but health and reflection needs a bearer token of a role allowed to make it; with `tls`, the port speaks
    TLS (mutual TLS when it names a client CA).
    """
    metrics = CoordinatorMetrics()
    interceptors = [metrics.interceptor()] + ([TokenAuthInterceptor(tokens)] if tokens else [])
    server = create_server(max_workers, interceptors=interceptors)
    health_servicer = health.HealthServicer()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    coordinator = open_coordinator(store, data_dir, task, config, observer=metrics)
    metrics.bind(coordinator)
    annotation_pb2_grpc.add_AnnotationServiceServicer_to_server(AnnotationServicer(coordinator), server)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(TrainingServicer(coordinator), server)
    selection_pb2_grpc.add_SelectionServiceServicer_to_server(SelectionServicer(coordinator), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(coordinator), server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoordinatorServer(server, port, coordinator, health_servicer, metrics)
