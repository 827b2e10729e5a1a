"""aal-server: a trainer that follows the labeled pool, trains, evaluates and publishes versioned weights.

It rides out an outage of any length (its calls and its label stream resume once the coordinator answers
again); a wrong token or TLS setting, or any other refused call, ends it with one line.
"""

from __future__ import annotations

import click

from aal_rpc.cli.common import (Command, check_model, coordinator_option, default_id, first_contact,
                                log_level_option, on_termination, run_program, security_options, set_threads,
                                threads_option)
from aal_rpc.client import CoordinatorClient
from aal_rpc.errors import InvalidArgument
from aal_rpc.trainer import Trainer, TrainerConfig


@click.command(cls=Command)
@coordinator_option
@click.option("--server-id", default=None, help="Name in the registry (default: server-HOST-PID).")
@click.option("--epochs", type=click.IntRange(min=1), default=TrainerConfig.epochs, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=0), default=TrainerConfig.min_steps,
              show_default=True,
              help="Optimizer steps per round at least; epochs repeat until then (a fixed compute per round).")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainerConfig.batch_size, show_default=True,
              help="Minibatch size.")
@click.option("--lr", type=float, default=TrainerConfig.lr, show_default=True, help="The schedule's peak.")
@click.option("--warm-start/--from-scratch", default=TrainerConfig.warm_start, show_default=True,
              help="Continue from this server's previous weights for a quarter of a round's steps (the first round "
                   "from scratch), or train anew each round.")
@click.option("--paced-rounds/--full-rounds", "paced", default=TrainerConfig.paced, show_default=True,
              help="Rounds as long as the pace of labeling allows (short while L is small or labels come fast, so "
                   "the first model exists within seconds), or every round the full --epochs/--min-steps.")
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
@click.option("--max-rounds", type=click.IntRange(min=1), default=None, help="Stop after this many rounds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@threads_option
@security_options
@log_level_option
def main(coordinator, server_id, epochs, min_steps, batch_size, lr, warm_start, paced, min_new_labels, min_growth,
         min_labels, init_weights, max_rounds, seed, device, threads, security):
    """Run a server (trainer)."""
    set_threads(threads)
    config = TrainerConfig(server_id=server_id or default_id("server"), epochs=epochs, batch_size=batch_size, lr=lr,
                           warm_start=warm_start, seed=seed, device=device, init_weights=init_weights,
                           min_new_labels=min_new_labels, min_growth=min_growth, min_labels=min_labels,
                           min_steps=min_steps, paced=paced)
    with CoordinatorClient(coordinator, retry_for=None, security=security) as client:
        first_contact(client)
        check_model(client.task(), client.weights_fingerprint())
        try:
            trainer = Trainer(client, config)
        except InvalidArgument as exc:  # --init-weights that are not the task's model's
            raise click.ClickException(f"--init-weights {init_weights}: {exc}") from None
        on_termination(lambda: (client.stop_retrying(), trainer.stop()))
        trainer.run(max_rounds=max_rounds)


def run() -> None:
    """The aal-server program (see run_program: no slow interpreter teardown after a clean stop)."""
    run_program(main)


if __name__ == "__main__":
    run()
