"""The model registry: shape checks, "latest" semantics, pruning, long polls."""

import pytest
import torch

from aal_rpc.chunking import sha256_hex
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.errors import InvalidArgument, NotFound
from aal_rpc.models import build_model
from aal_rpc.serde import weights_from_bytes, weights_to_bytes
from tests.conftest import TASK, fill_labels


def weights(seed=0, **override):
    torch.manual_seed(seed)
    sd = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()
    sd.update(override)
    return weights_to_bytes(sd)


def publish(c, data, *, labels, server="s"):
    """Publish weights trained on `labels` labels (labeling filler items first when L holds fewer)."""
    fill_labels(c, labels)
    return c.publish_model(data=data, server_id=server, trained_seq=c.stats().last_seq, num_labels=labels,
                           architecture="mlp", metrics={"accuracy": 0.5}, sha256=sha256_hex(data))


@pytest.fixture
def coordinator(make_coordinator):
    return make_coordinator(CoordinatorConfig(keep_models=2))


def test_latest_means_most_labels_then_newest(coordinator):
    reg = coordinator.registry
    assert reg.latest() is None
    publish(coordinator, weights(), labels=10)
    publish(coordinator, weights(), labels=30)
    publish(coordinator, weights(), labels=20)
    assert reg.latest().version == 2
    again = publish(coordinator, weights(), labels=30)  # a retried upload (its answer lost): no second version
    assert again.version == 2 and len(reg.list()) == 3
    publish(coordinator, weights(seed=1), labels=30)
    assert reg.latest().version == 4


def test_mismatched_shapes_are_refused_and_registry_unchanged(coordinator):
    bad = weights(**{"head.weight": torch.zeros(3, 128)})
    with pytest.raises(InvalidArgument, match="head.weight"):
        publish(coordinator, bad, labels=1)
    missing = weights_to_bytes({"head.weight": torch.zeros(10, 128)})
    with pytest.raises(InvalidArgument, match="missing"):
        publish(coordinator, missing, labels=1)
    with pytest.raises(InvalidArgument, match="safetensors"):
        publish(coordinator, b"\x80\x04not safetensors", labels=1)
    assert coordinator.registry.list() == [] and coordinator.registry.latest() is None
    assert coordinator.store.read_blob(1) is None


def test_only_the_last_blobs_are_kept_but_latest_never_pruned(coordinator):
    publish(coordinator, weights(), labels=50)
    for n in (1, 2, 3):
        publish(coordinator, weights(), labels=n)
    infos = {m.version: m for m in coordinator.registry.list()}
    assert infos[1].blob_available  # the latest (most labels)
    assert not infos[2].blob_available
    assert infos[3].blob_available and infos[4].blob_available
    with pytest.raises(NotFound):
        coordinator.registry.read_blob(2)


def test_weights_round_trip_through_safetensors():
    data = weights(seed=3)
    state = weights_from_bytes(data)
    model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
    model.load_state_dict(state)
    assert weights_to_bytes(model.state_dict()) == data
