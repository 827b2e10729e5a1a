"""Your own model: a factory named by import path (MODULE:FACTORY) or by an installed entry point (group
`aal_rpc.models`) builds wherever a built-in name does; a plain nn.Module that gives logits is wrapped so its
penultimate activations are the embedding; what cannot be built, or builds other shapes, is said in one line."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import click
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from aal_rpc.cli.common import check_model
from aal_rpc.errors import InvalidArgument
from aal_rpc.models import Classifier, PlainClassifier, build_model, expected_shapes
from aal_rpc.serde import load_weights_file, spec_fingerprint, weight_spec
from aal_rpc.training import predict_proba, train

MODELS = '''
import torch
from torch import nn

from aal_rpc.models import Classifier

HIDDEN = {hidden}


def plain(input_shape, num_classes):
    """A plain module that gives logits: its last Linear's input is the embedding."""
    d = 1
    for s in input_shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, num_classes))


def classifier(input_shape, num_classes):
    """A Classifier that reads a real tensor as it builds (which the meta device has not)."""
    d = int(torch.ones(input_shape).sum().item())
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(d, HIDDEN), nn.ReLU()), HIDDEN, num_classes)


def not_a_module(input_shape, num_classes):
    return "a string"


def no_linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten())


def broken(input_shape, num_classes):
    raise RuntimeError("no GPU here")


def head_first(input_shape, num_classes):
    """The head registered before the layers its forward runs after: the last registered Linear is not the head."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(HIDDEN, num_classes)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), HIDDEN))

        def forward(self, x):
            return self.out(self.body(x).relu())
    return Net()


def too_wide(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_classes + 4))


class _FailsInEval(nn.Sequential):
    def forward(self, x):
        if not self.training:
            raise RuntimeError("boom in eval")
        return super().forward(x)


def fails_in_eval(input_shape, num_classes):
    return _FailsInEval(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_classes))


class _Nan(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * float("nan")


def nan_out(input_shape, num_classes):
    return _Nan(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_classes))
'''

_names = itertools.count()


def write_models(folder, *, hidden: int = 16, module: str | None = None) -> str:
    """A module of model factories in `folder` (a fresh module name each call: Python caches imported modules)."""
    module = module or f"own_models_{next(_names)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(MODELS.format(hidden=hidden))
    return module


def write_entry_point(folder, name: str, value: str) -> None:
    """An installed distribution, as far as importlib.metadata can tell: a dist-info with one entry point."""
    info = folder / f"own_models_dist_{next(_names)}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {info.name.split('-')[0]}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[aal_rpc.models]\n{name} = {value}\n")


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return write_models(tmp_path)


def test_a_plain_module_by_import_path_trains_and_gives_penultimate_embeddings(models):
    torch.manual_seed(0)
    model = build_model(f"{models}:plain", (1, 8, 8), 3)
    assert isinstance(model, PlainClassifier) and isinstance(model, Classifier) and model.embedding_dim == 16
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    train(model, x, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=6)
    probs, emb = predict_proba(model, x, with_embeddings=True)
    assert probs.shape == (6, 3) and emb.shape == (6, 16)
    assert np.allclose(predict_proba(model, x)[0], probs, atol=1e-6)
    # its weights are the plain module's own state dict, names unchanged, both ways
    assert list(model.state_dict()) == list(model.net.state_dict())
    assert set(expected_shapes(f"{models}:plain", (1, 8, 8), 3)) == set(model.state_dict())
    again = build_model(f"{models}:plain", (1, 8, 8), 3)
    again.load_state_dict(model.net.state_dict())
    assert np.allclose(predict_proba(again, x)[0], probs, atol=1e-6)


def test_a_classifier_by_import_path_and_by_entry_point(models, tmp_path):
    write_entry_point(tmp_path, "my-small", f"{models}:classifier")
    by_path = build_model(f"{models}:classifier", (1, 8, 8), 4)
    by_name = build_model("my-small", (1, 8, 8), 4)
    assert type(by_path) is Classifier and type(by_name) is Classifier
    # its shapes read although it cannot be built on the meta device (built for real instead)
    assert weight_spec("my-small", (1, 8, 8), 4) == weight_spec(f"{models}:classifier", (1, 8, 8), 4)
    assert weight_spec("my-small", (1, 8, 8), 4)["head.weight"] == ((4, 16), "F32")


@pytest.mark.parametrize("name, phrase", [
    ("no_such_module_xyz:plain", "no module named 'no_such_module_xyz'"),
    ("{m}:missing", "has no missing"),
    ("{m}:HIDDEN", "not callable"),
    ("{m}:not_a_module", "returned str, not a torch.nn.Module"),
    ("{m}:no_linear", "no nn.Linear"),
    ("{m}:broken", "RuntimeError: no GPU here"),
    ("nonesuch", "unknown model 'nonesuch'"),
    (":plain", "MODULE:FACTORY"),
])
def test_a_model_that_cannot_be_built_is_named_in_one_line(models, name, phrase):
    name = name.format(m=models)
    with pytest.raises(ValueError) as info:
        build_model(name, (1, 8, 8), 3)
    message = str(info.value)
    assert phrase in message and repr(name) in message and "\n" not in message


def test_an_entry_point_whose_module_is_gone_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_entry_point(tmp_path, "gone-model", "vanished_module_xyz:plain")
    with pytest.raises(ValueError, match="'gone-model': no module named 'vanished_module_xyz'"):
        build_model("gone-model", (1, 8, 8), 3)


def test_the_fingerprint_tells_two_versions_of_a_model_apart(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b, c = write_models(tmp_path, hidden=16), write_models(tmp_path, hidden=32), write_models(tmp_path, hidden=16)
    fingerprint = lambda m: spec_fingerprint(weight_spec(f"{m}:plain", (1, 8, 8), 3))  # noqa: E731
    assert fingerprint(a) == fingerprint(c) != fingerprint(b)
    assert len(fingerprint(a)) == 64
    assert spec_fingerprint(weight_spec("cnn", (1, 8, 8), 3)) != spec_fingerprint(weight_spec("cnn", (1, 8, 8), 4))


def test_init_weights_are_checked_against_the_architecture(models, tmp_path):
    name = f"{models}:plain"
    spec = weight_spec(name, (1, 8, 8), 3)
    mine = build_model(name, (1, 8, 8), 3).state_dict()
    save_file(mine, tmp_path / "ok.safetensors")
    state = load_weights_file(tmp_path / "ok.safetensors", spec)
    assert all(torch.equal(state[k], mine[k]) for k in mine)

    wider = write_models(tmp_path, hidden=32)
    save_file(build_model(f"{wider}:plain", (1, 8, 8), 3).state_dict(), tmp_path / "wider.safetensors")
    with pytest.raises(InvalidArgument, match="1.weight .*shape \\(32, 64\\), expected F32 of shape \\(16, 64\\)"):
        load_weights_file(tmp_path / "wider.safetensors", spec)
    save_file({k: v.double() if v.is_floating_point() else v for k, v in mine.items()}, tmp_path / "f64.safetensors")
    with pytest.raises(InvalidArgument, match="F64"):
        load_weights_file(tmp_path / "f64.safetensors", spec)
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(InvalidArgument, match="not valid safetensors"):
        load_weights_file(tmp_path / "pickle.pt", spec)
    torch.save(mine, tmp_path / "saved.pt")  # never unpickled: the message says how to write safetensors instead
    with pytest.raises(InvalidArgument, match="looks like a torch.save file.*save_file"):
        load_weights_file(tmp_path / "saved.pt", spec)


def test_the_trainer_starts_a_new_model_from_init_weights(models, tmp_path, grpc_coordinator):
    """Trainer.new_model: the first round's model holds the given weights, not random ones."""
    from aal_rpc.client import CoordinatorClient
    from aal_rpc.trainer import Trainer, TrainerConfig
    from tests.conftest import TASK

    init = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()
    save_file(init, tmp_path / "init.safetensors")
    address, _ = grpc_coordinator
    with CoordinatorClient(address, retry_for=5) as client:
        trainer = Trainer(client, TrainerConfig(server_id="s", init_weights=str(tmp_path / "init.safetensors")))
        model = trainer.new_model()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items())
        save_file({k: v[:1] if v.dim() else v for k, v in init.items()}, tmp_path / "cut.safetensors")
        with pytest.raises(InvalidArgument, match="do not match the task's architecture"):
            Trainer(client, TrainerConfig(server_id="s", init_weights=str(tmp_path / "cut.safetensors")))


def test_a_plain_module_inside_another_keeps_its_names(models):
    outer = nn.ModuleDict({"inner": build_model(f"{models}:plain", (1, 8, 8), 3)})
    names = list(outer.state_dict())
    assert names[0] == "inner.1.weight" and not any(".net." in n for n in names)
    outer.load_state_dict(outer.state_dict())


def test_a_classifier_carries_its_input_normalization_in_its_weights():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 8), nn.ReLU())
    model = Classifier(features, 8, 3, input_mean=[0.5, 0.25], input_std=[0.5, 0.25]).eval()
    x = torch.rand(5, 2, 4, 4)
    normalized = (x - torch.tensor([0.5, 0.25]).view(2, 1, 1)) / torch.tensor([0.5, 0.25]).view(2, 1, 1)
    assert torch.allclose(model.embed(x), features(normalized))
    assert torch.allclose(model(x), model.head(features(normalized)))
    state = model.state_dict()
    assert torch.equal(state["input_mean"], torch.tensor([0.5, 0.25]))  # travels with the weights
    plain = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(32, 8), nn.ReLU()), 8, 3)
    assert "input_mean" not in plain.state_dict()  # none given: the weights are as before
    with pytest.raises(ValueError, match="go together"):
        Classifier(features, 8, 3, input_mean=[0.5, 0.25])


@pytest.mark.parametrize("factory, run, phrase", [
    ("head_first", False, "its head gives 16 outputs for the task's 3 classes"),
    ("too_wide", False, "its head gives 7 outputs for the task's 3 classes"),
    ("fails_in_eval", True, "failed in eval mode: RuntimeError: boom in eval"),
    ("nan_out", True, "not all finite (NaN or infinite) in train mode"),
    ("plain", False, "bytes of weights, more than the registry takes (--max-weight-bytes 100)"),
])
def test_a_model_that_breaks_the_contract_is_refused_at_start_in_one_line(models, factory, run, phrase):
    """Before any round: the head gives the task's classes (every process), a forward gives their finite logits in
    both modes (servers and workers, which run it), and the weights fit the registry (the coordinator)."""
    task = SimpleNamespace(architecture=f"{models}:{factory}", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(click.ClickException) as info:
        check_model(task, run=run, max_weight_bytes=100)
    assert phrase in info.value.message and "\n" not in info.value.message, info.value.message
    check_model(SimpleNamespace(architecture=f"{models}:plain", input_shape=(1, 8, 8), num_classes=3), run=True)
