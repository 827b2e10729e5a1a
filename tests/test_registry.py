"""The model registry: shape checks, "latest" semantics, pruning, long polls."""

import pytest
import torch
from safetensors.torch import save

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


def test_weights_in_a_writable_buffer_are_read_in_place_as_safetensors_reads_them():
    """A download (chunking.assemble) is a writable buffer: its tensors are views of it, not copies, and they
    are what safetensors' own reader makes of the same bytes, every dtype a state dict holds included."""
    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7), "mask": torch.tensor([True, False, True]),
             "half": torch.randn(5).half(), "brain": torch.randn(2, 2).bfloat16(), "none": torch.zeros(0, 3),
             "ids": torch.arange(3, dtype=torch.int32), "bytes": torch.arange(5, dtype=torch.uint8)}
    data = save(state, metadata={"note": "kept out of the tensors"})
    buffer = bytearray(data)
    got = weights_from_bytes(memoryview(buffer))
    assert set(got) == set(state)
    for name, tensor in state.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)
    start = torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()
    assert start <= got["w"].data_ptr() < start + len(buffer)  # in place


@pytest.mark.parametrize("damage", ["header length", "offsets", "gap", "tail", "shape", "not an object"])
def test_damaged_safetensors_in_a_writable_buffer_are_refused(damage):
    import json
    import struct

    data = save({"a": torch.ones(2, 2), "b": torch.zeros(3)})
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    if damage == "header length":
        data = struct.pack("<Q", len(data)) + data[8:]
    else:
        if damage == "offsets":
            header["a"]["data_offsets"] = [0, 4]
        elif damage == "gap":
            header["b"]["data_offsets"] = [20, 32]
            body += b"\0" * 4
        elif damage == "tail":
            body += b"\0" * 8
        elif damage == "shape":
            header["a"]["shape"] = [2, -2]
        elif damage == "not an object":
            header = [1, 2]
        text = json.dumps(header).encode()
        data = struct.pack("<Q", len(text)) + text + body
    with pytest.raises(InvalidArgument, match="not valid safetensors"):
        weights_from_bytes(bytearray(data))
