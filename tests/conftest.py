"""Shared fixtures: a task, a coordinator core on a temporary data dir, and a real gRPC coordinator on 127.0.0.1:0."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.core import Coordinator, CoordinatorConfig
from aal_rpc.coordinator.store import SqliteStore
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.types import Candidate, Payload, Provenance, Task

TASK = Task(dataset="digits", num_classes=10, class_names=tuple(str(i) for i in range(10)), input_shape=(1, 8, 8),
            architecture="mlp")


def make_candidate(item_id: str, *, version: int = 0, score: float = 0.5, strategy: str = "entropy",
                   worker: str = "w0") -> Candidate:
    x = np.full((1, 8, 8), float(int(item_id) % 7) / 7, dtype=np.float32)
    return Candidate(item_id, Payload.from_array(x), Provenance(worker, strategy, version, score))


def code_of(call):
    """The gRPC status code `call()` fails with (it must fail)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture
def task() -> Task:
    return TASK


@pytest.fixture
def make_coordinator(tmp_path):
    """Open (or reopen) a coordinator core on one data dir; all are closed at teardown."""
    opened: list[Coordinator] = []

    def make(config: CoordinatorConfig = CoordinatorConfig(), task: Task = TASK) -> Coordinator:
        c = Coordinator(SqliteStore(tmp_path / "data"), task, config)
        opened.append(c)
        return c

    yield make
    for c in opened:
        if not c._closed:
            c.close()


@pytest.fixture
def grpc_coordinator(tmp_path):
    """A real gRPC coordinator bound to 127.0.0.1:0; yields (address, CoordinatorServer)."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "grpc-data", TASK,
                                    CoordinatorConfig(pool_capacity=64, lease_seconds=30))
    yield f"127.0.0.1:{srv.port}", srv
    srv.stop(grace=0)


@pytest.fixture
def procs(tmp_path):
    """Processes a test starts; all stopped at teardown."""
    group = ProcessGroup(tmp_path / "logs")
    yield group
    group.stop_all()


def wait_until(predicate, timeout=90.0, interval=0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
