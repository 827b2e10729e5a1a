"""aal-server: a trainer that follows the labeled pool, trains, evaluates and publishes versioned weights.

It rides out an outage of any length (its calls and its label stream resume once the coordinator answers
again); a wrong token or TLS setting, or any other refused call, ends it with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from aal_rpc.cli.common import (Command, check_model, coordinator_option, default_id, first_contact,
                                log_level_option, model_failures, on_termination, run_program, security_options,
                                set_threads, threads_option)
from aal_rpc.client import CoordinatorClient
from aal_rpc.errors import InvalidArgument
from aal_rpc.trainer import Trainer, TrainerConfig


RECIPE_KEYS = ("epochs", "min_steps", "batch_size", "lr", "weight_decay", "augment", "mixed_precision",
               "semi_supervised")


def read_recipe(ctx: click.Context, param, path: Path | None) -> Path | None:
    """--recipe FILE: a JSON or TOML table of RECIPE_KEYS that stand in for those options' defaults (an option given
    on the command line still wins)."""
    if path is None:
        return None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # Python 3.11+

            recipe = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            recipe = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError) as exc:  # tomllib.TOMLDecodeError and json's errors are ValueErrors
        raise click.BadParameter(f"{path}: {exc}") from None
    if not isinstance(recipe, dict):
        raise click.BadParameter(f"{path}: expected a table of {', '.join(RECIPE_KEYS)}")
    recipe = {str(k).replace("-", "_"): v for k, v in recipe.items()}
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise click.BadParameter(f"{path}: unknown {', '.join(unknown)}; a recipe sets {', '.join(RECIPE_KEYS)}")
    ctx.default_map = {**(ctx.default_map or {}), **recipe}
    return path


@click.command(cls=Command)
@coordinator_option
@click.option("--server-id", default=None, help="Name in the registry (default: server-HOST-PID).")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              is_eager=True, expose_value=False, callback=read_recipe, metavar="FILE.json|FILE.toml",
              help=f"A training recipe: any of {', '.join(k.replace('_', '-') for k in RECIPE_KEYS)} "
                   "(as keys), in place of those options' defaults; options given here still win.")
@click.option("--epochs", type=click.IntRange(min=1), default=TrainerConfig.epochs, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=0), default=TrainerConfig.min_steps,
              show_default=True,
              help="Optimizer steps per round at least; epochs repeat until then (a fixed compute per round).")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainerConfig.batch_size, show_default=True,
              help="Minibatch size.")
@click.option("--lr", type=float, default=TrainerConfig.lr, show_default=True, help="The schedule's peak.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=TrainerConfig.weight_decay, show_default=True)
@click.option("--augment/--no-augment", default=TrainerConfig.augment, show_default=True,
              help="Random shifts and small rotations of digit-like pictures, crops and flips of RGB ones.")
@click.option("--mixed-precision/--full-precision", default=TrainerConfig.mixed_precision, show_default=True,
              help="On a CUDA device, train in bfloat16 (float16 where the GPU lacks it), or in float32.")
@click.option("--semi-supervised/--supervised-only", default=TrainerConfig.semi_supervised, show_default=True,
              help="Rounds also learn from the dataset's pool items not in L (FixMatch: pseudo-labels the model is "
                   "sure of, trained on strongly augmented views), or from the labels alone.")
@click.option("--warm-start/--from-scratch", default=TrainerConfig.warm_start, show_default=True,
              help="Continue from this server's previous weights for a quarter of a round's steps (the first round "
                   "from scratch), or train anew each round.")
@click.option("--paced-rounds/--full-rounds", "paced", default=TrainerConfig.paced, show_default=True,
              help="Rounds as long as the pace of labeling allows (short while L is small or labels come fast, so "
                   "the first model exists within seconds), or every round the full --epochs/--min-steps.")
@click.option("--pretrain-steps", type=click.IntRange(min=0), default=TrainerConfig.pretrain_steps, show_default=True,
              help="Before the first labeled round, while no model is published: contrastive pretraining on the "
                   "pool for this many steps, published as an encoder (the selectors' cold start picks typical "
                   "items of its embedding) that every trainer's models start from. 0: none.")
@click.option("--min-new-labels", type=click.IntRange(min=1), default=TrainerConfig.min_new_labels,
              show_default=True, help="Train again once this many labels arrived since the last round.")
@click.option("--min-growth", type=click.FloatRange(min=0), default=TrainerConfig.min_growth, show_default=True,
              help="... and once L grew by this fraction since the last round (fewer versions as L grows).")
@click.option("--min-labels", type=click.IntRange(min=1), default=TrainerConfig.min_labels, show_default=True,
              help="Train the first model once L holds this many labels (an initial labeled set); until then "
                   "workers offer seeded-random candidates.")
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE.safetensors",
              help="Weights of the task's model (a safetensors file of its state dict) that a new model starts from "
                   "instead of random ones: the first round's, and every round's with --from-scratch. Checked "
                   "against the model's names, shapes and dtypes at start.")
@click.option("--freeze-backbone/--train-backbone", default=TrainerConfig.freeze_backbone, show_default=True,
              help="Train the head only, on the embeddings of the backbone a new model starts with (--init-weights', "
                   "say), each item embedded once: a round trains a linear layer, and workers score with a matrix "
                   "product. Published weights stay the whole model. Not with --semi-supervised.")
@click.option("--max-rounds", type=click.IntRange(min=1), default=None, help="Stop after this many rounds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@threads_option
@security_options
@log_level_option
def main(coordinator, server_id, epochs, min_steps, batch_size, lr, weight_decay, augment, mixed_precision,
         semi_supervised, warm_start, paced, pretrain_steps, min_new_labels, min_growth, min_labels, init_weights,
         freeze_backbone, max_rounds, seed, device, threads, security):
    """Run a server (trainer)."""
    set_threads(threads)
    if freeze_backbone and semi_supervised:
        raise click.UsageError("--freeze-backbone trains the head on labeled items only; drop --semi-supervised")
    config = TrainerConfig(server_id=server_id or default_id("server"), epochs=epochs, batch_size=batch_size, lr=lr,
                           weight_decay=weight_decay, augment=augment, mixed_precision=mixed_precision,
                           semi_supervised=semi_supervised,
                           warm_start=warm_start, seed=seed, device=device, init_weights=init_weights,
                           min_new_labels=min_new_labels, min_growth=min_growth, min_labels=min_labels,
                           min_steps=min_steps, paced=paced, pretrain_steps=pretrain_steps,
                           freeze_backbone=freeze_backbone)
    with CoordinatorClient(coordinator, retry_for=None, security=security) as client:
        first_contact(client)
        check_model(client.task(), client.weights_fingerprint(), run=True)
        try:
            trainer = Trainer(client, config)
        except InvalidArgument as exc:  # --init-weights that are not the task's model's
            raise click.ClickException(f"--init-weights {init_weights}: {exc}") from None
        on_termination(lambda: (client.stop_retrying(), trainer.stop()))
        with model_failures("a training round"):
            trainer.run(max_rounds=max_rounds)


def run() -> None:
    """The aal-server program (see run_program: no slow interpreter teardown after a clean stop)."""
    run_program(main)


if __name__ == "__main__":
    run()
