"""aal-admin import FILE: labels a team already has (a partly labeled pool) into the labeled pool L.

FILE is what `aal-admin export` writes, jsonl or csv: per row an item id (`item_id` or `id`; or, for a pool read
from files, the file's path relative to the dataset, `source`, as `export --sources` writes it) and its label, as a
class index (`label`) or a class name (`label_name`). Each item's payload is read here from the task's dataset, as
the selectors read it, and the coordinator records the labels with provenance strategy "imported". The whole file
is checked first: a row naming an unknown item or class ends the command with one line, and nothing is imported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import click

from aal_rpc.cli.common import Command
from aal_rpc.client import CoordinatorClient
from aal_rpc.types import Payload

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@click.command("import", cls=Command)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--annotator", default="import", show_default=True,
              help="Who gave these labels: the annotator_id of every imported record.")
@click.pass_obj
def import_command(client: CoordinatorClient, file: Path, annotator: str):
    """Import the labels in FILE (jsonl or csv: item_id or id, and label or label_name) into L.

    A file exported with --history names an item once per record; its last record (the current label) counts.
    Items already labeled are skipped, so importing a file again imports nothing new.
    """
    task = client.task()
    from aal_rpc.data import load_task_dataset  # looked up when run: of aal-admin's commands only this one loads data

    try:
        dataset = load_task_dataset(task)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot load the task's dataset {task.dataset!r}: {exc}") from None
    labels = read_labels(file, task.class_names, by_source=ids_by_source(dataset))
    rows: dict[str, int] = {}
    missing: list[str] = []
    for item_id in labels:
        try:
            rows[item_id] = dataset.index_of(item_id)
        except KeyError:
            missing.append(item_id)
    if missing:
        raise click.ClickException(f"{file}: {len(missing)} item(s) are not in the pool of {task.dataset!r}, "
                                   f"e.g. {missing[0]!r}; nothing imported")

    def items() -> Iterator[tuple[str, int, Payload]]:
        for item_id, label in labels.items():
            row = rows[item_id]
            try:
                text = dataset.texts[row] if dataset.texts is not None else ""
                payload = Payload.from_array(dataset.x_pool[row], image=dataset.picture(row), text=text)
            except (ValueError, OSError) as exc:  # the client cancels the call: nothing is imported
                raise click.ClickException(f"item {item_id!r}: {exc}; nothing imported") from None
            yield item_id, label, payload

    out = client.import_labels(items(), annotator_id=annotator)
    click.echo(f"imported {out.imported} labels ({out.skipped} already labeled, skipped)")


def ids_by_source(dataset) -> dict[str, str]:
    """A pool's item ids by source file (relative to the dataset), for rows that name a file; {} for a pool read
    from no files."""
    return dict(zip(dataset.sources, dataset.item_ids)) if dataset.sources is not None else {}


def read_labels(path: Path, class_names: Sequence[str], *, by_source: dict[str, str] | None = None
                ) -> dict[str, int]:
    """item id -> class index from a jsonl or csv file (format in the module docstring); a later row of an item
    replaces an earlier one. A row may name its item by its `source` file instead, looked up in `by_source`.
    Raises click.ClickException, naming the line, for a row it cannot use."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    is_jsonl = path.suffix.lower() in JSONL_SUFFIXES or (path.suffix.lower() != ".csv"
                                                         and text.lstrip().startswith("{"))
    labels: dict[str, int] = {}
    for line, row in (_jsonl_rows(path, text) if is_jsonl else _csv_rows(text)):
        where = f"{path} line {line}"
        item_id = row.get("item_id", row.get("id"))
        source = row.get("source")
        if (item_id is None or item_id == "") and source and by_source is not None:
            item_id = by_source.get(str(source))
            if item_id is None:
                raise click.ClickException(f"{where}: the pool holds no file {source!r}; nothing imported")
        if item_id is None or item_id == "":
            raise click.ClickException(f"{where}: no item_id (or id, or source); nothing imported")
        labels[str(item_id)] = _label(row, class_names, where)
    return labels


def _label(row: dict, class_names: Sequence[str], where: str) -> int:
    value, name = row.get("label"), row.get("label_name")
    if value is not None and value != "":
        try:
            label = int(value) if not isinstance(value, (bool, float)) else None
        except ValueError:
            label = None
        if label is None or not 0 <= label < len(class_names):
            raise click.ClickException(f"{where}: label {value!r} is not a class index in [0, {len(class_names)}); "
                                       "nothing imported")
        if name not in (None, "", class_names[label]):
            raise click.ClickException(f"{where}: label {label} and label_name {name!r} disagree; nothing imported")
        return label
    if name is not None and name != "":
        if name not in class_names:
            raise click.ClickException(f"{where}: unknown class {name!r} (the task's classes: "
                                       f"{', '.join(class_names)}); nothing imported")
        return list(class_names).index(name)
    raise click.ClickException(f"{where}: no label (or label_name); nothing imported")


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{path} line {line}: not JSON ({exc.msg}); nothing imported") from None
        if not isinstance(row, dict):
            raise click.ClickException(f"{path} line {line}: not a JSON object; nothing imported")
        yield line, row


def _csv_rows(text: str) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield reader.line_num, row
