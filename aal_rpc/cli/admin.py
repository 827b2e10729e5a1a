"""aal-admin: inspect a running coordinator (stats, models), export the labeled pool, write a published model
out and classify new files with it.

One-shot commands: a coordinator that cannot be reached fails the command at once (after the channel's own
quick retries), with one line naming the cause, rather than being waited for. `predict` needs no coordinator.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np

from aal_rpc.cli.admin_import import import_command
from aal_rpc.cli.common import COORDINATOR_ENV, Group, coordinator_option, security_options
from aal_rpc.client import CoordinatorClient
from aal_rpc.client.crowd import CONSENSUS_FIELDS, annotator_rows, consensus_rows, crowd_of
from aal_rpc.client.job import job_report
from aal_rpc.measures import ORIGINS, chosen_by_model_share, estimated_accuracy, origins_of  # noqa: F401 - re-exported
from aal_rpc.predict import CARD_FILE, WEIGHTS_FILE, UnreadableFile, load_model, write_model
from aal_rpc.types import LabeledRecord, Task, is_encoder

EXPORT_FIELDS = ("seq", "item_id", "label", "label_name", "annotator_id", "queued_at", "leased_at", "labeled_at",
                 "worker_id", "strategy", "model_version", "score", "supersedes")
SOURCE_FIELD = "source"  # with --sources: the file an item came from, relative to the dataset


class LazyClient:
    """The group's CoordinatorClient, made on first use, and standing in for it (every attribute is the client's):
    commands take it with click.pass_obj, and one that calls no coordinator (predict) runs without --coordinator."""

    def __init__(self, target: str | None, security):
        self.target, self.security = target, security
        self._client: CoordinatorClient | None = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._client is None:
            if not self.target:
                raise click.UsageError(f"this command needs --coordinator HOST:PORT (or {COORDINATOR_ENV})")
            self._client = CoordinatorClient(self.target, retry_for=0, wait_for_ready=False, security=self.security)
        return getattr(self._client, name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@click.group(cls=Group)
@coordinator_option
@security_options
@click.pass_context
def main(ctx, coordinator, security):
    """Inspect a coordinator, export its labels and models, and classify files with an exported model."""
    ctx.obj = LazyClient(coordinator, security)
    ctx.call_on_close(ctx.obj.close)


# The shared option is required; here the first call to the coordinator asks for it (LazyClient), so that
# `predict` runs where no coordinator is.
next(p for p in main.params if p.name == "coordinator").required = False
main.add_command(import_command, "import")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--provenance", is_flag=True,
              help="Accepted so old scripts work, and ignored: every record's provenance is now read anyway.")
@click.pass_obj
def stats(client: CoordinatorClient, as_json: bool, provenance: bool):
    """Pool sizes, label counts, the latest model version and its estimated accuracy, labels per model version
    published, and where the labels came from; with --json also what the lead's page shows (aal_rpc/client/job.py):
    the pool's size and what remains, the label rate, each annotator's labels, skips, defers and pace, the accuracy
    curve, the models' staleness and the stopping signal.

    Below the figures, in plain words: how many labels the models chose, how many were random and why
    (cold start, the random strategy, the audit), how many were typical items of a pretrained encoder (the cold
    start's too), how many came with the data, and whether annotators are outrunning training. Reads every
    label's provenance.
    """
    d = job_report(client)
    if as_json:
        click.echo(json.dumps(d, sort_keys=True))
        return
    shown_apart = ("label_origins", "estimated_accuracy", "annotators", "pace_per_minute", "curve", "recent_models",
                   "stopping")
    for k in sorted(set(d) - set(shown_apart)):
        v = d[k]
        click.echo(f"{k:>22}: {'-' if v is None else round(v, 3) if isinstance(v, float) else v}")
    click.echo(f"{'estimated_accuracy':>22}: {format_estimate(d['estimated_accuracy'], audit_labels=True)}")
    click.echo(f"{'stopping':>22}: {d['stopping']['reason']}")
    if d["annotators"]:
        click.echo("")
        click.echo(f"{'annotator':<28} {'labels':>7} {'skips':>6} {'defers':>6} {'per min':>7}")
        for name, a in sorted(d["annotators"].items(), key=lambda kv: -kv[1]["labels"]):
            click.echo(f"{name:<28.28} {a['labels']:>7} {a['skips']:>6} {a['defers']:>6} "
                       f"{d['pace_per_minute'][name]:>7.1f}")
    click.echo("")
    click.echo(origins_message(d["label_origins"], versions=d["latest_model_version"], per_model=d["labels_per_model"],
                               batch_size=client.task().batch_size, only_encoders=bool(d["recent_models"]) and not d["curve"]))


def label_origins(records: Iterable[LabeledRecord], encoders: Collection[int] = ()) -> dict:
    """Where labels came from, by their records' provenance (measures.origins_of)."""
    return origins_of(Counter((r.provenance.strategy, r.provenance.model_version) for r in records), encoders)


def origins_message(origins: dict, *, versions: int, per_model: float | None = None, batch_size: int = 0,
                    only_encoders: bool = False) -> str:
    """In plain words, how the labels were chosen (label_origins): by a model, with which strategies; at random,
    and why; as typical items of a pretrained encoder; imported. Then whether any model exists yet (trained on
    labels: not while `only_encoders`), and whether annotators outrun training: more labels per model version
    (`per_model`) than one batch (`batch_size`, the task's; 0: unknown)."""
    total = sum(origins[k] for k in ORIGINS)

    def part(n: int) -> str:
        return f"{n} ({100 * n / total:.0f}%)"

    if total == 0:
        text = "No labels yet."
    else:
        model = origins["model"]
        text = f"Of {_count(total, 'label')}, {part(model)} {'was' if model == 1 else 'were'} chosen by a model"
        strategies = origins.get("model_strategies") or {}
        text += f" ({', '.join(f'{name} {n}' for name, n in strategies.items())})." if strategies else "."
        reasons = [f"{origins['cold_start']} chosen at random before any model existed (cold start)",
                   f"{origins['random_strategy']} by the random strategy",
                   f"{origins['audit']} audit: drawn uniformly at random on purpose, kept out of training, used "
                   "for the accuracy estimate"]
        random = origins["cold_start"] + origins["random_strategy"] + origins["audit"]
        if random:
            shown = [r for r, n in zip(reasons, (origins["cold_start"], origins["random_strategy"],
                                                 origins["audit"])) if n]
            text += f" {part(random)} {'was' if random == 1 else 'were'} random: {'; '.join(shown)}."
        typical = origins["typical"]
        if typical:
            text += (f" {part(typical)} {'was a typical item' if typical == 1 else 'were typical items'} of an "
                     "encoder's embedding (one pretrained on the pool, or the untrained network's), picked before any "
                     "model trained on labels existed (cold start, TypiClust).")
        if origins["imported"]:
            text += f" {part(origins['imported'])} {'was' if origins['imported'] == 1 else 'were'} imported with " \
                    "the data."
        if origins.get("gold"):
            text += f" {part(origins['gold'])} {'was' if origins['gold'] == 1 else 'were'} of gold items (known " \
                    "answers, and annotators' labels of them)."
    if versions == 0:
        text += (" No model yet: queries are the cold start's (random picks, or typical items of the untrained "
                 "network's embedding with aal-worker --cold-start typical) until the first model arrives.")
    elif only_encoders:
        text += (" No model trained on labels yet: queries are typical items of an encoder's embedding "
                 "until the first one arrives.")
    elif batch_size and per_model is not None and per_model > batch_size:
        text += (f" Annotators are outrunning training: about {per_model:.1f} labels arrived per model version, "
                 f"more than one batch ({batch_size}).")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_estimate(est: dict | None, *, audit_labels: bool = False) -> str:
    """An estimated_accuracy as `value [low, high]` (the 95% interval), optionally with its audit label count;
    "-" for none."""
    if est is None:
        return "-"
    text = f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"
    return f"{text} (95% interval, {_count(est['labels'], 'audit label')})" if audit_labels else text


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models(client: CoordinatorClient, as_json: bool):
    """The model registry, with each model's accuracy on the test set and, where it saw audit labels, its accuracy
    estimated on them with a 95% interval."""
    infos = client.models()
    if as_json:
        click.echo(json.dumps([{**asdict(m), "estimated_accuracy": estimated_accuracy(m.metrics)} for m in infos]))
        return
    click.echo(f"{'version':>7} {'server':<28} {'labels':>6} {'seq':>6} {'accuracy':>8} {'estimated [95%]':<22} "
               f"{'MB':>7} blob")
    for m in infos:
        estimate = "encoder (pretrained)" if is_encoder(m) else format_estimate(estimated_accuracy(m.metrics))
        accuracy = f"{m.metrics['accuracy']:.4f}" if "accuracy" in m.metrics else "-"
        click.echo(f"{m.version:>7} {m.server_id:<28.28} {m.num_labels:>6} {m.trained_seq:>6} "
                   f"{accuracy:>8} {estimate:<22} "
                   f"{m.size_bytes / 1e6:>7.2f} {'yes' if m.blob_available else 'pruned'}")


def _row(r: LabeledRecord, class_names: tuple[str, ...], sources: dict[str, str | None] | None = None) -> dict:
    p = r.provenance
    row = {"seq": r.seq, "item_id": r.item_id, "label": r.label,
           "label_name": class_names[r.label] if 0 <= r.label < len(class_names) else None,
           "annotator_id": r.annotator_id, "queued_at": r.queued_at, "leased_at": r.leased_at,
           "labeled_at": r.labeled_at, "worker_id": p.worker_id, "strategy": p.strategy,
           "model_version": p.model_version, "score": p.score, "supersedes": r.supersedes}
    if sources is not None:
        row[SOURCE_FIELD] = sources.get(r.item_id)
    return row


def item_sources(task: Task) -> dict[str, str | None]:
    """Each pool item's source file (relative to the dataset; None where it came from none), read from the task's
    dataset, loaded here. A dataset that cannot be loaded ends the command with one line."""
    try:
        from aal_rpc.data import load_task_dataset

        dataset = load_task_dataset(task)
        sources = dataset.sources
    except Exception as exc:  # any reason at all (missing files, another machine's path, no such loader): one line
        raise click.ClickException(
            f"--sources: cannot load the dataset {task.dataset!r} here ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); export without --sources, or where the data is") from None
    return dict(zip(dataset.item_ids, sources)) if sources is not None else {}


@main.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "npz"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--history", is_flag=True, help="Every record, corrected ones included (default: each item's "
              "current label once).")
@click.option("--consensus", "agreed", is_flag=True,
              help="One row per item, with several labels per item (aal-coordinator --labels-per-item): its consensus "
                   "`label` (and `label_name`), that label's `confidence`, how many `labels` it has and every "
                   "annotator's vote (`votes`), by Dawid-Skene's model of each annotator's reliability (majority "
                   "vote while no two annotators share an item).")
@click.option("--sources", is_flag=True, help="Add each item's source file (`source`, relative to the dataset; "
              "empty where none). Loads the task's dataset, so it runs only where the data is.")
@click.pass_obj
def export(client: CoordinatorClient, fmt: str, out: Path, history: bool, agreed: bool, sources: bool):
    """Write the labeled pool with every record's provenance and its class name (`label_name`), or with
    --consensus each item's consensus label; npz adds the item tensors as `x`."""
    if agreed and history:
        raise click.UsageError("--consensus gives one row per item: it does not go with --history")
    task = client.task()
    by_item = item_sources(task) if sources else None
    records = list(client.export(include_payload=fmt == "npz", latest_only=not history))
    if agreed:
        rows = consensus_rows(crowd_of(records, task.num_classes), task.class_names)
        fields: tuple[str, ...] = CONSENSUS_FIELDS
        first: dict[str, LabeledRecord] = {}
        for r in records:
            first.setdefault(r.item_id, r)
        payloads = [first[row["item_id"]] for row in rows]
        if by_item is not None:
            for row in rows:
                row[SOURCE_FIELD] = by_item.get(row["item_id"])
    else:
        rows = [_row(r, task.class_names, by_item) for r in records]
        fields = EXPORT_FIELDS
        payloads = records
    fields += (SOURCE_FIELD,) if sources else ()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    elif fmt == "csv":
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows({**row, "votes": json.dumps(row["votes"])} if agreed else row for row in rows)
    else:
        # strings, never None: an object array would need pickle to load
        arrays = {k: np.asarray(["" if row[k] is None else json.dumps(row[k]) if k == "votes" else row[k]
                                 for row in rows]) for k in fields}
        if payloads:
            xs = []
            for r in payloads:
                assert r.payload is not None  # exported with include_payload
                xs.append(r.payload.to_array())
            arrays["x"] = np.stack(xs)
        np.savez_compressed(out, allow_pickle=False, y=arrays.pop("label").astype(np.int64), **arrays)
    click.echo(f"exported {len(rows)} {'items with their consensus' if agreed else 'labels'} to {out}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array of rows: annotator, labels, agreement, quality, "
              "gold_labels, gold_correct, skips, defers (null: not estimated yet).")
@click.pass_obj
def annotators(client: CoordinatorClient, as_json: bool):
    """Each annotator's labels, agreement with the consensus and estimated quality (the probability they label an
    item right, by Dawid-Skene over every label of L), lowest quality first: with several labels per item
    (aal-coordinator --labels-per-item), who is careless shows here. Reads every label of L."""
    task = client.task()
    agreed = crowd_of(client.export(include_payload=False, latest_only=True), task.num_classes)
    rows = annotator_rows(agreed, client.stats().annotators)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'annotator':<28} {'labels':>7} {'agreement':>9} {'quality':>8} {'gold':>9} {'skips':>6} {'defers':>6}")
    for r in rows:
        gold = f"{r['gold_correct']}/{r['gold_labels']}" if r["gold_labels"] else "-"
        click.echo(f"{r['annotator']:<28.28} {r['labels']:>7} {_or_dash(r['agreement']):>9} "
                   f"{_or_dash(r['quality']):>8} {gold:>9} {r['skips']:>6} {r['defers']:>6}")
    click.echo(f"\n{len(agreed.items)} items; consensus by {agreed.method}")


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help=f"Folder to write {WEIGHTS_FILE} and {CARD_FILE} into (created if need be).")
@click.option("--version", type=click.IntRange(min=0), default=0, help="The registry version (default: the latest).")
@click.pass_obj
def model(client: CoordinatorClient, out: Path, version: int):
    """Write a published model out: its weights exactly as published (safetensors) and a card.json with its
    classes, input, registry entry, metrics and estimated accuracy. `aal-admin predict` (or
    aal_rpc.predict.load_model) uses the folder without a coordinator."""
    task = client.task()
    info, weights = client.download_model(version)
    write_model(out, task, info, weights)
    click.echo(f"wrote model version {info.version} ({info.architecture}, {_count(info.num_labels, 'label')}) to "
               f"{out}: {WEIGHTS_FILE}, {CARD_FILE}")


@main.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A folder written by `aal-admin model --out`.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def predict(model_dir: Path, files: tuple[Path, ...]):
    """Classify FILES (pictures, or texts for a text task) with an exported model, prepared as the pool's items
    were; needs no coordinator. Prints one JSON object per file: {"path", "class", "probabilities"}.

    A file that cannot be read gets one line on stderr; the others are still classified, and the command exits
    with status 1. Vector tasks are out of scope (their items are no files).
    """
    try:
        exported = load_model(model_dir)
        exported.check_reads_files()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    failed: list[UnreadableFile] = []

    def report(exc: UnreadableFile) -> None:
        failed.append(exc)
        click.echo(f"cannot classify {exc.path}: {exc.reason}", err=True)

    for prediction in exported.iter_predictions(files, on_error=report):
        click.echo(json.dumps(prediction.to_json()))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
