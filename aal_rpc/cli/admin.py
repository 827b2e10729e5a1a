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
@click.pass_obj
def stats(client: CoordinatorClient, as_json: bool):
    """Pool sizes, label counts and the latest model version."""
    d = MessageToDict(client.stats(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    d = {k: (int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v) for k, v in d.items()}
    d["labels_by_strategy"] = {k: int(v) for k, v in d.get("labels_by_strategy", {}).items()}
    if as_json:
        click.echo(json.dumps(d, sort_keys=True))
    else:
        for k in sorted(d):
            click.echo(f"{k:>22}: {d[k]}")


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
