"""aal-experiment: run the whole system locally, as separate processes, to a label budget."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aal_rpc.cli.annotate import ACCURACIES
from aal_rpc.cli.common import model_option, strategy_list
from aal_rpc.coordinator.query_pool import PICK_ORDERS
from aal_rpc.coordinator.rules import MAX_LABELS_PER_ITEM
from aal_rpc.data import DATASETS
from aal_rpc.experiment import ExperimentConfig, ExperimentFailed, run_experiment
from aal_rpc.experiment.suite import ARMS, SCALES, STUDIES, run_suite
from aal_rpc.models import resolve_factory
from aal_rpc.selector.loop import COLD_STARTS


@click.group(invoke_without_command=True)
@click.option("--dataset", default="digits", show_default=True, help=f"{DATASETS}.")
@model_option
@click.option("--mode", type=click.Choice(["async", "sync"]), default="async", show_default=True,
              help="sync: each batch waits for a model trained on all labels (the classic loop).")
@click.option("--servers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--strategies", default="entropy,least_confidence,margin", show_default=True, callback=strategy_list,
              help="Comma-separated; assigned across the workers.")
@click.option("--assign", type=click.Choice(["round-robin", "random"]), default="round-robin", show_default=True)
@click.option("--annotators", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=400, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=20, show_default=True,
              help="Candidates a worker submits per round; in sync mode also the labels per round.")
@click.option("--annotator-delay", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Mean seconds an annotator takes per label.")
@click.option("--annotator-accuracy", type=ACCURACIES, default="",
              help="A crowd with careless members: comma-separated probabilities that each simulated annotator "
                   "answers the true label, else another class (aal-annotate --accuracy: annotator i gets value i "
                   "modulo their number). Default: every answer true.")
@click.option("--labels-per-item", type=click.IntRange(min=1, max=MAX_LABELS_PER_ITEM), default=1, show_default=True,
              help="Labels each item gets, each from a different annotator (aal-coordinator --labels-per-item; "
                   "async mode, at most --annotators). --budget counts labels, not items.")
@click.option("--max-labels-per-item", type=click.IntRange(min=0, max=MAX_LABELS_PER_ITEM), default=0,
              show_default=True, help="Adaptive re-labeling up to this many labels per item (aal-coordinator "
                                      "--max-labels-per-item; 0: none): workers with the activelab strategy ask "
                                      "for one more label where an item's labels and the model leave it uncertain.")
@click.option("--epochs", type=click.IntRange(min=1), default=ExperimentConfig.epochs, show_default=True,
              help="Epochs per training round (default: the servers' recipe).")
@click.option("--min-steps", type=click.IntRange(min=0), default=ExperimentConfig.min_steps, show_default=True,
              help="Optimizer steps per training round at least (a fixed compute per round; the servers' recipe).")
@click.option("--initial-labels", type=click.IntRange(min=0), default=0, show_default=True,
              help="Labels (seeded-random) before the first model is trained; 0: one batch, as the sync loop has.")
@click.option("--pool-capacity", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: 2 x workers x batch size.")
@click.option("--pick", type=click.Choice(PICK_ORDERS), default="fresh", show_default=True)
@click.option("--warm-start/--from-scratch", default=ExperimentConfig.warm_start, show_default=True)
@click.option("--pretrain-steps", type=click.IntRange(min=0), default=ExperimentConfig.pretrain_steps,
              show_default=True, help="The first server pretrains an encoder on the pool this many steps before its "
                                      "first labeled round (aal-server).")
@click.option("--cold-start", type=click.Choice(COLD_STARTS), default=ExperimentConfig.cold_start, show_default=True,
              help="The workers' picks before any model: typical items of the untrained network's embedding, or "
                   "random ones (aal-worker).")
@click.option("--paced-rounds/--full-rounds", "paced", default=ExperimentConfig.paced, show_default=True,
              help="Servers' rounds as long as the pace of labeling allows, or each the full recipe (aal-server).")
@click.option("--semi-supervised/--supervised-only", default=ExperimentConfig.semi_supervised, show_default=True,
              help="Servers' rounds also learn from the pool's unlabeled items (aal-server), or from the labels alone.")
@click.option("--eval-repeats", type=click.IntRange(min=0), default=3, show_default=True,
              help="After the run, train this many models afresh on the chosen labels and report their mean "
                   "accuracy (retrained_accuracy) beside the final model's: the labels' worth, less one run's luck.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Torch threads per process.")
@click.option("--device", default="cpu", show_default=True, help="torch device of servers and workers.")
@click.option("--out", default="runs/experiment", show_default=True, help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def main(ctx, quiet, **options):
    """Run coordinator, servers, workers and simulated annotators to a label budget; write results to --out.

    `aal-experiment suite` runs the paper's studies instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        resolve_factory(options["model"])  # here, in one line, rather than as a coordinator that did not start
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        cfg = ExperimentConfig(**options)
    except ValueError as exc:  # a crowd the coordinator would refuse, or one that could never finish an item
        raise click.UsageError(str(exc)) from None
    try:
        summary = run_experiment(cfg, progress=not quiet)
    except ExperimentFailed as exc:
        raise click.ClickException(str(exc)) from None
    brief = {k: summary[k] for k in ("final_accuracy", "retrained_accuracy", "random_accuracy", "labels",
                                     "model_versions", "labels_per_model", "cold_start_share", "typical_share",
                                     "wait_seconds", "labels_by_strategy", "crowd")}
    click.echo(json.dumps(brief, indent=2))
    click.echo(in_words(summary))
    click.echo(f"wrote {cfg.out}/summary.json, labels.jsonl (L), accuracy.png (random sampling dashed), wait.png")


def in_words(summary: dict) -> str:
    """What a run's figures mean: the share of labels chosen before any model trained on labels existed (at random,
    or typical items of a pretrained encoder's embedding), and active learning against random sampling at the same
    budget."""
    labels = summary["labels"]
    share = summary["cold_start_share"] or 0.0
    typical_share = summary.get("typical_share") or 0.0
    cold, typical = round(share * labels), round(typical_share * labels)
    if typical:
        lines = [f"{cold - typical} of {labels} labels ({100 * (share - typical_share):.0f}%) were chosen at random "
                 f"and {typical} ({100 * typical_share:.0f}%) as typical items of an encoder's embedding (TypiClust), "
                 f"before any model trained on labels existed; the models chose the other {labels - cold} "
                 f"({100 * (1 - share):.0f}%)."]
    else:
        lines = [f"{cold} of {labels} labels ({100 * share:.0f}%) were chosen at random, before any model existed; "
                 f"the models chose the other {labels - cold} ({100 * (1 - share):.0f}%)."]
    ours, rand = summary.get("retrained_accuracy"), summary.get("random_accuracy")
    if ours is not None and rand is not None:
        diff = 100 * (ours - rand)
        than = (f"{diff:.1f} points better than" if diff >= 0.05 else f"{-diff:.1f} points worse than"
                if diff <= -0.05 else "as well as")
        lines.append(f"Models retrained on these labels reach {ours:.3f} held-out accuracy, on as many labels drawn "
                     f"at random {rand:.3f}: active learning did {than} random sampling.")
    return "\n".join(lines)


@main.command()
@click.option("--scale", type=click.Choice(sorted(SCALES)), default="small", show_default=True,
              help="small: digits on CPU; paper: CIFAR-10 / VGG-16 (GPU and data needed).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds of every study (study f runs at least the scale's regime_seeds).")
@click.option("--studies", default=",".join(STUDIES), show_default=True,
              callback=lambda ctx, param, value: _studies(value),
              help="Comma-separated studies to run and report (see docs/RESULTS.md; b comes with a).")
@click.option("--dataset", default=None, help="Override the scale's dataset (any name, npz:PATH included).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/suite"), show_default=True)
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Where to write the markdown report (default OUT/RESULTS.md; figures beside it).")
@click.option("--notes", type=click.Path(path_type=Path), default=None,
              help="A markdown file of reading notes to include in the report.")
@click.option("--arms", default="with", show_default=True, callback=lambda ctx, param, value: _arms(value),
              help="Comma-separated: with (paced rounds, typical cold start, semi-supervised rounds), without "
                   "(full rounds, random cold start, supervised rounds), both to measure their effect; paced, "
                   "typical, pretrained, semi: one of them alone on top of without (the ablation; typical: of "
                   "the untrained network's embedding, pretrained: of an encoder pretrained on the pool).")
@click.option("--eval-repeats", type=click.IntRange(min=0), default=ExperimentConfig.eval_repeats, show_default=True,
              help="Models trained afresh on each run's final labels (the retrained accuracy; 0: none).")
@click.option("--report-only", is_flag=True, help="Write the report from the runs already done; run nothing.")
@click.option("--from-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run only the seeds from this one on: a second process may take the last seeds.")
@click.option("--where", default="", callback=lambda ctx, param, value: _where(value),
              help="Only the runs whose key has these values, e.g. method=aal,servers=1 (a study's keys: its "
                   "report's columns).")
def suite(scale, seeds, studies, dataset, out, report, notes, arms, eval_repeats, report_only, from_seed, where):
    """The paper's studies (sync vs async, waits, servers, strategy mix), Cluster-Margin, the annotator-pace
    regimes and labels to a target accuracy, with repeated seeds."""
    try:
        run_suite(scale, seeds=seeds, out=out, dataset=dataset, report=report, notes=notes, studies=studies,
                  arms=arms, eval_repeats=eval_repeats, run_missing=not report_only, from_seed=from_seed,
                  where=where, progress=click.echo)
    except ExperimentFailed as exc:  # the runs done so far are kept: a rerun takes up from there
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}/suite.json and {report or out / 'RESULTS.md'}")


def _where(value: str) -> dict[str, str]:
    pairs = [s.strip() for s in value.split(",") if s.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise click.BadParameter(f"expected KEY=VALUE, got {bad}")
    return dict(p.split("=", 1) for p in pairs)


def _arms(value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in ARMS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown arms {unknown}; choose from {','.join(ARMS)}")
    return chosen


def _studies(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in chosen if s not in STUDIES]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown studies {unknown}; choose from {','.join(STUDIES)}")
    return chosen


if __name__ == "__main__":
    main()
