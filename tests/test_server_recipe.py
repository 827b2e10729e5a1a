"""aal-server's recipe: today's (training.RECIPE) by default, each part settable as an option or from a --recipe file
(JSON or TOML), options given on the command line winning over the file."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aal_rpc.cli import server as server_cli
from aal_rpc.training import RECIPE, train


class Stop(Exception):
    pass


@pytest.fixture
def configs(monkeypatch):
    """The TrainerConfig each invocation builds (it stops where it would contact the coordinator)."""
    seen = []

    class NoCoordinator:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            raise Stop

        def __exit__(self, *exc):
            return False

    real = server_cli.TrainerConfig
    monkeypatch.setattr(server_cli, "TrainerConfig", lambda **kw: seen.append(real(**kw)) or seen[-1])
    monkeypatch.setattr(server_cli, "CoordinatorClient", NoCoordinator)
    return seen


def run(*args):
    return CliRunner().invoke(server_cli.main, ["--coordinator", "127.0.0.1:1", *map(str, args)])


def test_the_default_recipe_is_todays(configs):
    assert isinstance(run().exception, Stop)
    c = configs[-1]
    assert (c.epochs, c.min_steps, c.batch_size, c.lr, c.weight_decay, c.augment, c.mixed_precision) == (
        RECIPE.epochs, RECIPE.min_steps, RECIPE.batch_size, RECIPE.lr, RECIPE.weight_decay, RECIPE.augment,
        RECIPE.mixed_precision)


def test_options_and_a_recipe_file_set_it(configs, tmp_path):
    run("--lr", "0.01", "--weight-decay", "0", "--no-augment", "--full-precision", "--batch-size", "64")
    c = configs[-1]
    assert (c.lr, c.weight_decay, c.augment, c.mixed_precision, c.batch_size) == (0.01, 0.0, False, False, 64)

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"epochs": 5, "min-steps": 50, "lr": 0.02, "augment": False}))
    run("--recipe", recipe, "--lr", "0.03")  # the command line wins over the file
    c = configs[-1]
    assert (c.epochs, c.min_steps, c.lr, c.augment, c.batch_size) == (5, 50, 0.03, False, RECIPE.batch_size)
    if sys.version_info >= (3, 11):
        toml = tmp_path / "recipe.toml"
        toml.write_text("weight_decay = 0.05\nmixed_precision = false\n")
        run("--recipe", toml)
        assert (configs[-1].weight_decay, configs[-1].mixed_precision) == (0.05, False)


@pytest.mark.parametrize("content, phrase", [
    ('{"momentum": 0.9}', "unknown momentum"),
    ('{"epochs": 0}', "epochs"),
    ("[1, 2]", "expected a table"),
    ("{not json", "recipe.json"),
])
def test_a_bad_recipe_file_is_a_usage_error(configs, tmp_path, content, phrase):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(content)
    result = run("--recipe", recipe)
    assert result.exit_code == 2 and phrase in result.output and not configs, result.output


def test_full_precision_trains_on_a_cpu_as_before():
    """On a CPU nothing runs in reduced precision either way: the same seed gives the same weights."""
    x, y = np.random.default_rng(0).random((8, 4)).astype(np.float32), np.arange(8) % 2
    weights = []
    for mixed in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        train(model, x, y, epochs=2, batch_size=4, mixed_precision=mixed)
        weights.append(model.weight.detach().clone())
    assert torch.equal(*weights)


def test_semi_supervised_rounds_are_an_option_and_a_recipe_key(configs, tmp_path):
    run()
    assert configs[-1].semi_supervised is RECIPE.semi_supervised is False  # off by default (docs/RECIPE.md section 7)
    run("--semi-supervised")
    assert configs[-1].semi_supervised is True
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"semi-supervised": True}))
    run("--recipe", recipe)
    assert configs[-1].semi_supervised is True
    run("--recipe", recipe, "--supervised-only")
    assert configs[-1].semi_supervised is False
