"""aal-annotate: label queries, either as simulated oracles (--oracle) or as a person at a terminal.

Both ride out an outage of any length once they have reached the coordinator; a wrong token or TLS setting
ends the command at once with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

# aal_rpc.cli.common first: it sets gRPC's log level, which grpc reads when it is first imported
from aal_rpc.cli.common import (Command, coordinator_option, default_id, first_contact, log_level_option,
                                on_termination, security_options)
from aal_rpc.annotators.oracle import OracleAnnotators, parse_accuracies
from aal_rpc.annotators.terminal import run_terminal
from aal_rpc.client import AnnotationClient
from aal_rpc.data import load_task_dataset


class Accuracies(click.ParamType):
    """A comma-separated list of annotators' accuracies, each in [0, 1] (oracle.parse_accuracies), as a tuple; a
    value outside it is a usage error. aal-experiment's --annotator-accuracy takes the same list."""

    name = "P[,P...]"

    def convert(self, value, param, ctx) -> tuple[float, ...]:
        if isinstance(value, tuple):  # a default, or a value already converted
            return value
        try:
            return parse_accuracies(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ACCURACIES = Accuracies()


@click.command(cls=Command)
@coordinator_option
@click.option("--oracle", is_flag=True, help="Simulated annotators answering from the dataset's ground truth.")
@click.option("--annotators", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent simulated annotators.")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Mean labeling time in seconds (each label takes 0.5-1.5x this).")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Stop after this many labels.")
@click.option("--accuracy", type=ACCURACIES, default="",
              help="Careless simulated annotators (with --oracle): comma-separated probabilities that each answers "
                   "the true label, else a class drawn uniformly from the others. Annotator i gets value i modulo "
                   "their number, so one value applies to all, and 0.9,0.9,0.9,0.9,0.3,0.3 makes the 5th and 6th "
                   "of --annotators 6 careless. Default: every answer true.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a final JSON summary (with --oracle).")
@click.option("--acks-file", type=click.Path(path_type=Path), default=None,
              help="Append every acknowledged label here as a JSON line.")
@click.option("--waits-file", type=click.Path(path_type=Path), default=None,
              help="Write every measured wait (seconds) here as a JSON list.")
@click.option("--annotator-id", default=None, help="Who is labeling (interactive mode).")
@security_options
@log_level_option
def main(coordinator, oracle, annotators, delay, budget, accuracy, seed, as_json, acks_file, waits_file, annotator_id,
         security):
    """Label queries from the coordinator's query pool."""
    if not oracle:
        with AnnotationClient(coordinator, annotator_id or default_id("person"), retry_for=None,
                              security=security) as client:
            first_contact(client)
            n = run_terminal(client, ask=lambda text: click.prompt(text, default="", show_default=False),
                             say=click.echo)
        click.echo(f"{n} labels saved")
        return
    with AnnotationClient(coordinator, "oracle", retry_for=None, security=security) as client:
        first_contact(client)
        try:
            dataset = load_task_dataset(client.task())
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    if not dataset.is_fully_labeled:
        unlabeled = len(dataset.y_pool) - len(dataset.labeled_rows)
        raise click.ClickException(
            f"--oracle answers from the dataset's labels, and {unlabeled} of its {len(dataset.y_pool)} pool items "
            "have none: people label this pool (aal-web, aal-labelstudio, or aal-annotate without --oracle)")
    try:
        run = OracleAnnotators(coordinator, dataset, annotators=annotators, delay=delay, budget=budget, seed=seed,
                               acks_path=acks_file, security=security, accuracy=accuracy)
    except ValueError as exc:  # more accuracies than annotators
        raise click.UsageError(str(exc)) from None
    on_termination(run.stop)
    report = run.run()
    if waits_file:
        waits_file.write_text(json.dumps(report.waits))
    summary = report.summary()
    click.echo(json.dumps(summary) if as_json else
               f"{summary['acknowledged']} labels acknowledged in {summary['seconds']:.1f}s; "
               f"wait p50 {summary['wait_seconds']['p50'] * 1000:.1f} ms, "
               f"p99 {summary['wait_seconds']['p99'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
