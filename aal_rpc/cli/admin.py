"""aal-admin: inspect a running coordinator (stats, models) and export the labeled pool.

One-shot commands: a coordinator that cannot be reached fails the command at once (after the channel's own
quick retries), with one line naming the cause, rather than being waited for.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
from google.protobuf.json_format import MessageToDict

from aal_rpc.cli.common import Group, coordinator_option, security_options
from aal_rpc.client import CoordinatorClient
from aal_rpc.experiment.measures import labels_per_model
from aal_rpc.types import LabeledRecord

EXPORT_FIELDS = ("seq", "item_id", "label", "annotator_id", "queued_at", "leased_at", "labeled_at", "worker_id",
                 "strategy", "model_version", "score", "supersedes")


@click.group(cls=Group)
@coordinator_option
@security_options
@click.pass_context
def main(ctx, coordinator, security):
    """Inspect a coordinator and export its labels."""
    ctx.obj = CoordinatorClient(coordinator, retry_for=0, wait_for_ready=False, security=security)
    ctx.call_on_close(ctx.obj.close)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--provenance", is_flag=True,
              help="Also count the labels chosen before any model existed (reads every record's provenance).")
@click.pass_obj
def stats(client: CoordinatorClient, as_json: bool, provenance: bool):
    """Pool sizes, label counts, the latest model version, and labels per model version published.

    Below the figures, a plain sentence on how the labels are being chosen: at random while no model exists;
    otherwise how many labels each model chose, and whether annotators are outrunning training.
    """
    d = MessageToDict(client.stats(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    d = {k: (int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v) for k, v in d.items()}
    d["labels_by_strategy"] = {k: int(v) for k, v in d.get("labels_by_strategy", {}).items()}
    # versions are numbered from 1 and never reused: the latest version counts the models published
    d["labels_per_model"] = labels_per_model(d["labeled"], d["latest_model_version"])
    if provenance:
        d["cold_start_labels"] = sum(r.provenance.model_version == 0
                                     for r in client.export(include_payload=False, latest_only=True))
    if as_json:
        click.echo(json.dumps(d, sort_keys=True))
        return
    for k in sorted(d):
        v = d[k]
        click.echo(f"{k:>22}: {'-' if v is None else round(v, 1) if isinstance(v, float) else v}")
    click.echo("")
    click.echo(pace_message(d["labeled"], d["latest_model_version"], batch_size=client.task().batch_size,
                            cold_start=d.get("cold_start_labels")))


def pace_message(labeled: int, versions: int, *, batch_size: int = 0, cold_start: int | None = None) -> str:
    """How the labels are being chosen, in a sentence: at random until the first model arrives; then how many
    labels each model chose, flagged when that is more than a batch (`batch_size`, the task's; 0: unknown)."""
    if versions == 0:
        if labeled == 0:
            return "No model yet: queries are chosen at random until the first model arrives."
        return (f"No model yet: all {labeled} labels so far were chosen at random, and queries stay random until "
                "the first model arrives.")
    per_model = labels_per_model(labeled, versions)
    text = (f"{labeled} labels over {versions} model version{'s' if versions != 1 else ''}: each model chose about "
            f"{per_model:.1f} labels.")
    if batch_size and per_model > batch_size:
        text += (f" Annotators are outrunning training: each model chose more labels than one batch "
                 f"({batch_size}) before the next replaced it.")
    if cold_start:
        text += (f" {cold_start} of {labeled} labels ({100 * cold_start / max(labeled, 1):.0f}%) were chosen before "
                 "any model existed, at random.")
    return text


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models(client: CoordinatorClient, as_json: bool):
    """The model registry."""
    infos = client.models()
    if as_json:
        click.echo(json.dumps([asdict(m) for m in infos]))
        return
    click.echo(f"{'version':>7} {'server':<28} {'labels':>6} {'seq':>6} {'accuracy':>8} {'MB':>7} blob")
    for m in infos:
        click.echo(f"{m.version:>7} {m.server_id:<28.28} {m.num_labels:>6} {m.trained_seq:>6} "
                   f"{m.metrics.get('accuracy', float('nan')):>8.4f} {m.size_bytes / 1e6:>7.2f} "
                   f"{'yes' if m.blob_available else 'pruned'}")


def _row(r: LabeledRecord) -> dict:
    p = r.provenance
    return {"seq": r.seq, "item_id": r.item_id, "label": r.label, "annotator_id": r.annotator_id,
            "queued_at": r.queued_at, "leased_at": r.leased_at, "labeled_at": r.labeled_at,
            "worker_id": p.worker_id, "strategy": p.strategy, "model_version": p.model_version, "score": p.score,
            "supersedes": r.supersedes}


@main.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "npz"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--history", is_flag=True, help="Every record, corrected ones included (default: each item's "
              "current label once).")
@click.pass_obj
def export(client: CoordinatorClient, fmt: str, out: Path, history: bool):
    """Write the labeled pool with every record's provenance (npz adds the item tensors as `x`)."""
    records = list(client.export(include_payload=fmt == "npz", latest_only=not history))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(out, "w") as f:
            for r in records:
                f.write(json.dumps(_row(r)) + "\n")
    elif fmt == "csv":
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=EXPORT_FIELDS)
            w.writeheader()
            w.writerows(_row(r) for r in records)
    else:
        rows = [_row(r) for r in records]
        arrays = {k: np.asarray([row[k] for row in rows]) for k in EXPORT_FIELDS}
        if records:
            arrays["x"] = np.stack([r.payload.to_array() for r in records])
        np.savez_compressed(out, y=arrays.pop("label").astype(np.int64), **arrays)
    click.echo(f"exported {len(records)} labels to {out}")


if __name__ == "__main__":
    main()
