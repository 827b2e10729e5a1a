"""An interactive terminal annotator for a person: shows the task's guidelines and classes, then each leased item,
and asks for its class.

Small images are drawn with Unicode half blocks in 24-bit colour, two pixel rows per text line. An item's id is never
shown: ids such as "cat_0042.jpg" may give the answer away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import grpc
import numpy as np

from aal_rpc.client import LEASE_GONE, AnnotationClient, LeasedQuery
from aal_rpc.types import Task

TARGET_WIDTH = 32  # images narrower than this are scaled up (nearest neighbour) so digits are legible


def render_terminal(x: np.ndarray) -> str:
    """Text drawing of an image tensor ((H, W), (1|3, H, W) in [0, 1]); a short summary for anything else."""
    if x.ndim == 3 and x.shape[0] in (1, 3):
        img = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    elif x.ndim == 2:
        img = np.repeat(x[None], 3, axis=0)
    else:
        flat = x.reshape(-1)
        return f"vector of {flat.size} values: " + " ".join(f"{v:.3g}" for v in flat[:16]) + (
            " ..." if flat.size > 16 else "")
    scale = max(1, TARGET_WIDTH // img.shape[2])
    img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    rgb = (np.clip(img, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.zeros_like(rgb[:1])])
    lines = []
    for top, bottom in zip(rgb[0::2], rgb[1::2]):
        cells = [f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m\u2580" for t, b in zip(top, bottom)]
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


Command = Literal["skip", "release", "quit", "help"]  # what parse_answer makes of a typed command


def parse_answer(answer: str, task: Task) -> int | Command | None:
    """A class index from a typed index or class name; "skip", "release", "quit", "help" for commands; None if
    unknown."""
    a = answer.strip()
    commands: dict[str, Command] = {"s": "skip", "skip": "skip", "r": "release", "release": "release", "q": "quit",
                                    "quit": "quit", "?": "help"}
    if a.lower() in commands:
        return commands[a.lower()]
    if a.isdigit() and int(a) < task.num_classes:
        return int(a)
    if a in task.class_names:
        return task.class_names.index(a)
    return None


def describe_task(task: Task) -> str:
    """The guidelines (their Markdown reads well as it is) and one line per class: its number, name, description."""
    descriptions = dict(enumerate(task.class_descriptions))
    lines = [task.guidelines.strip(), ""] if task.guidelines.strip() else []
    lines.append("classes:")
    for i, name in enumerate(task.class_names):
        described = descriptions.get(i, "")
        lines.append(f"  {i}  {name}" + (f" - {described}" if described else ""))
    return "\n".join(lines)


def item_view(query: LeasedQuery) -> str:
    """What the person looks at: the text of a text item, else a drawing of the tensor."""
    return query.text or render_terminal(query.array())


def run_terminal(client: AnnotationClient, *, ask: Callable[[str], str], say: Callable[[str], None],
                 wait_seconds: float = 30.0) -> int:
    """Lease, show, ask, submit, until the person quits. Returns how many labels were acknowledged."""
    task = client.task()
    legend = "  ".join(f"{i}={name}" for i, name in enumerate(task.class_names))
    say(describe_task(task))
    labeled = 0
    while True:
        say("waiting for a query ...")
        query: LeasedQuery | None = client.lease(wait_seconds=wait_seconds)
        if query is None:
            if ask("nothing to label yet; keep waiting? [Y/n]").strip().lower() in ("n", "no", "q"):
                return labeled
            continue
        say(item_view(query))
        say(f"(proposed by {query.provenance.strategy or '?'} with model v{query.provenance.model_version})")
        while True:
            answer = parse_answer(ask(f"class? {legend}   [s]kip [r]elease [q]uit [?]guide"), task)
            if answer == "help":
                say(describe_task(task))
            elif answer is not None:
                break
            else:
                say("not a class; type its number or name")
        try:
            if answer == "quit":
                client.release(query)
                return labeled
            if answer == "skip":
                client.skip(query)
            elif answer == "release":
                client.release(query)
            else:
                result = client.submit(query, answer)
                labeled += 1
                say(f"saved as #{result.seq}: {task.class_names[answer]}")
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise
            if answer == "quit":
                return labeled
            say(f"not saved: the lease on this item ran out ({exc.details()}); it went back to the pool")
