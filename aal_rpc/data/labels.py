"""Classes and labels: the classes a team declares (`--classes`, `--classes-file`), labels found in the data
mapped onto them, and the rows of a table (jsonl, csv, Parquet) sorted into pool and test by their labels,
ids and split field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import UNLABELED, Dataset, pool_and_test

SPLITS = ("train", "test")  # values of an optional split field: pool and held-out
INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ClassList:
    """Declared classes in their order (a label is a position), with one line of guidance each or none."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...] = ()  # () when no class has a description, else one per class ("" where none)


def read_classes(classes: str | None, classes_file: Path | None) -> ClassList:
    """`--classes a,b,c` or `--classes-file F` (one class a line, optionally a TAB and a description; blank
    lines and lines starting with '#' skipped). Neither given: no classes, `names` is ()."""
    if classes is not None and classes_file is not None:
        raise ValueError("give --classes or --classes-file, not both")
    if classes is None and classes_file is None:
        return ClassList(())
    names: list[str] = []
    descriptions: list[str] = []
    if classes is not None:
        where = "--classes"
        names = [c.strip() for c in classes.split(",")]
    else:
        assert classes_file is not None  # one of the two is given
        where = str(classes_file)
        try:
            text = Path(classes_file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: cannot read the classes ({exc})") from None
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, description = line.partition("\t")
            names.append(name.strip())
            descriptions.append(description.strip())
    if "" in names:
        raise ValueError(f"{where}: a class name is empty")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: classes named more than once: {', '.join(repeated)}")
    if len(names) < 2:
        raise ValueError(f"{where}: a task needs at least two classes; got {names}")
    return ClassList(tuple(names), tuple(descriptions) if any(descriptions) else ())


def no_classes(source: str) -> ValueError:
    return ValueError(f"{source}: no item has a label, so the data names no classes; declare them with --classes "
                      f"or --classes-file")


def resolve_labels(source: str, labels: Sequence[object], where: Callable[[int], str],
                   classes: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and (N,) label indices (UNLABELED for a None label). With declared classes a label is a
    class name, or else an integer index into them; without, string labels are names (sorted) and integer
    labels indices 0..max. `where(i)` names row i in errors."""
    y = np.full(len(labels), UNLABELED, dtype=np.int64)
    known = [i for i, lab in enumerate(labels) if lab is not None]
    values: list[int | str] = []  # the labels of `known`
    for i in known:
        lab = labels[i]
        if isinstance(lab, bool) or not isinstance(lab, (int, str)):
            raise ValueError(f"{where(i)}: label must be a class name or an integer; got {lab!r}")
        values.append(lab)
    if classes:
        names = tuple(classes)
        index = {n: k for k, n in enumerate(names)}
        for i, lab in zip(known, values):
            if isinstance(lab, str) and lab in index:
                y[i] = index[lab]
            elif isinstance(lab, int) or INTEGER.fullmatch(lab.strip()):
                y[i] = int(lab)
                if not 0 <= y[i] < len(names):
                    raise ValueError(f"{where(i)}: label {lab!r} is no class index: {len(names)} classes are "
                                     f"declared ({', '.join(names)})")
            else:
                raise ValueError(f"{where(i)}: class {lab!r} is not among the declared classes ({', '.join(names)})")
        return names, y
    if not known:
        raise no_classes(source)
    ints = [lab for lab in values if isinstance(lab, int)]
    strs = [lab for lab in values if isinstance(lab, str)]
    if len(ints) == len(values):
        negative = [i for i, lab in zip(known, ints) if lab < 0]
        if negative:
            raise ValueError(f"{where(negative[0])}: integer labels must be non-negative; found {labels[negative[0]]}")
        y[known] = ints
        return tuple(str(c) for c in range(int(y.max()) + 1)), y
    if len(strs) == len(values):
        names = tuple(sorted(set(strs)))
        index = {n: k for k, n in enumerate(names)}
        y[known] = [index[lab] for lab in strs]
        return names, y
    raise ValueError(f"{source}: labels must be all class names or all integers, not a mix")


@dataclass(frozen=True)
class Table:
    """A table's rows sorted out: its classes, every row's label, its ids (None: row numbers) and which rows
    are the pool and which the held-out split."""

    class_names: tuple[str, ...]
    y: np.ndarray
    ids: list[str] | None
    pool: np.ndarray
    test: np.ndarray


def table(source: str, where: Sequence[str], labels: Sequence[object], ids: Sequence[str | None],
          splits: Sequence[object], classes: Sequence[str] | None) -> Table:
    """Rows with an optional label (None: unlabeled), id and split ("train" or "test" on every row, or on
    none). Without a split field the pool and test rows follow `pool_and_test`; test rows need labels."""
    names, y = resolve_labels(source, labels, where.__getitem__, classes)
    if all(s is None for s in splits):
        pool, test = pool_and_test(y)
    else:
        for i, s in enumerate(splits):
            if s not in SPLITS:
                raise ValueError(f"{where[i]}: split must be one of {SPLITS} on every row; got {s!r}")
            if s == "test" and y[i] == UNLABELED:
                raise ValueError(f"{where[i]}: a test row needs a label")
        pool = np.array([i for i, s in enumerate(splits) if s == "train"], dtype=np.int64)
        test = np.array([i for i, s in enumerate(splits) if s == "test"], dtype=np.int64)
    return Table(names, y, _ids(where, ids), pool, test)


def _ids(where: Sequence[str], ids: Sequence[str | None]) -> list[str] | None:
    """The id field of every row, None when no row has one; a table that names some ids must name all, uniquely."""
    if all(i is None for i in ids):
        return None
    seen: dict[str, int] = {}
    for row, item_id in enumerate(ids):
        if item_id is None:
            raise ValueError(f"{where[row]}: no id, where other rows have one (give every row an id, or none)")
        if item_id in seen:
            raise ValueError(f"{where[row]}: duplicate id {item_id!r} (first at {where[seen[item_id]]})")
        seen[item_id] = row
    return list(seen)  # every id, in order (all unique)


def with_classes(ds: Dataset, classes: Sequence[str] | None) -> Dataset:
    """The dataset with its labels mapped onto declared classes by name (its own classes when none are
    declared); ValueError for a class of the data that is not declared."""
    if not classes or tuple(classes) == ds.class_names:
        return ds
    unknown = [n for n in ds.class_names if n not in classes]
    if unknown:
        raise ValueError(f"{ds.name}: the data's classes {', '.join(unknown)} are not among the declared classes "
                         f"({', '.join(classes)})")
    index = np.array([list(classes).index(n) for n in ds.class_names] + [UNLABELED], dtype=np.int64)
    return replace(ds, y_pool=index[ds.y_pool], y_test=index[ds.y_test], class_names=tuple(classes))  # -1 stays -1
