"""The labeling interface of a Label Studio project: the config the bridge generates from the task, the check of an
existing project's config, and the class an annotation names.

A config the bridge can work with has one <Choices> whose <Choice> values are exactly the task's class names, pointed
(toName) at one <Image> or <Text> object; the object's value ("$image") names the task data field that holds the item.
Any other attribute of a <Choice> (a hint, an alias, a hotkey) is the project's own business.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from aal_rpc.types import Task
from aal_rpc.web.guidelines import class_keys

OBJECT_KINDS = {"Image": "image", "Text": "text", "HyperText": "text"}  # object tags the bridge can fill, by kind
CHOICES_NAME = "label"  # the name of the <Choices> control in a generated config
# task data fields the bridge writes beside the item; a project's object may not read one of them. Annotators see
# them (the Data Manager's columns): none may give the answer away, so an item is named by an opaque reference.
REF_FIELD = "aal_ref"
METADATA_FIELDS = (REF_FIELD, "model_version", "score", "strategy", "cluster")
# The most pixels wide a generated config shows a picture (Label Studio stretches one to its panel's width, 750 px at
# most by default): the bridge enlarges smaller pictures by a whole factor to at most this (window.item_content).
IMAGE_PANEL = 512


class ConfigMismatch(ValueError):
    """A project's labeling config that the bridge cannot use for the task (the message says why)."""


@dataclass(frozen=True)
class Interface:
    """What the bridge needs to know of a project's labeling config.

    kind: "image" (the item's picture as a data: URL) or "text"; data_key: the task data field the object reads;
    control: the name of the <Choices>; classes: what an annotation's result holds for a choice -> class index.
    """

    kind: str
    data_key: str
    control: str
    to_name: str
    classes: dict[str, int]


def kind_for(task: Task, requested: str = "auto") -> str:
    """The object a project shows for the task's items: "image" for images ((H, W), (1, H, W) or (3, H, W): workers
    attach their picture), "text" otherwise (text items, and short summaries of other tensors)."""
    if requested != "auto":
        return requested
    shape = tuple(task.input_shape)
    image = len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))
    return "image" if image and task.architecture != "text" else "text"


def label_config(class_names: tuple[str, ...] | list[str], kind: str,
                 descriptions: tuple[str, ...] | list[str] = ()) -> str:
    """A labeling config for the task: the item (Image or Text) and one required single choice per class, each
    with its description (if any) as the hint shown on hover and aal-web's key for it as its hotkey (classes named
    0-9 their own digit, else 1-9, 0 for the first ten; Label Studio gives the rest keys of its own). A picture is
    drawn without smoothing in a panel IMAGE_PANEL pixels wide at most; the bridge sends a small one enlarged by a
    whole factor to about that size (window.item_content), so Label Studio scales it by little and it stays crisp:
    each of its pixels a square block, never a blur."""
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', not {kind!r}")
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError("class names must be distinct and not empty")
    obj = (f'<Image name="image" value="$image" smoothing="false" maxWidth="{IMAGE_PANEL}px" zoom="true" '
           f'zoomControl="true"/>' if kind == "image" else '<Text name="text" value="$text"/>')
    hints = {name: f" hint={quoteattr(text)}" for name, text in zip(class_names, descriptions) if text}
    keys = {name: f' hotkey="{key}"' for name, key in zip(class_names, class_keys(class_names)) if key}
    choices = "\n".join(f"    <Choice value={quoteattr(name)}{keys.get(name, '')}{hints.get(name, '')}/>"
                         for name in class_names)
    return (f'<View>\n  {obj}\n  <Choices name="{CHOICES_NAME}" toName="{kind}" choice="single-radio" '
            f'showInline="true" required="true">\n{choices}\n  </Choices>\n</View>\n')


def parse_label_config(xml: str, class_names: tuple[str, ...] | list[str]) -> Interface:
    """The Interface of a project's config for these classes; ConfigMismatch when it has none."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigMismatch(f"the labeling config is not valid XML ({exc})") from exc
    objects = {el.get("name"): el for el in root.iter() if el.tag in OBJECT_KINDS and el.get("name")}
    wanted = sorted(class_names)
    seen = []
    for control in root.iter("Choices"):
        choices = list(control.iter("Choice"))
        values = [c.get("value") for c in choices]
        seen.append(values)
        if sorted(v or "" for v in values) != wanted:
            continue
        targets = [n.strip() for n in (control.get("toName") or "").split(",")]
        target = next((objects[n] for n in targets if n in objects), None)
        if target is None:
            raise ConfigMismatch(f"the <Choices name={control.get('name')!r}> naming the classes points at "
                                 f"{control.get('toName')!r}, which is no <Image> or <Text> of the config")
        value = target.get("value") or ""
        if not value.startswith("$") or len(value) < 2:
            raise ConfigMismatch(f"the <{target.tag} name={target.get('name')!r}> must read a task field "
                                 f"(value=\"$field\"), not {value!r}")
        key = value[1:]
        if key in METADATA_FIELDS:
            raise ConfigMismatch(f"the <{target.tag}> reads ${key}, a field the bridge fills itself "
                                 f"({', '.join(METADATA_FIELDS)}): give the item another field")
        index = {name: i for i, name in enumerate(class_names)}
        # a result holds a choice's alias when it has one, else its value
        classes = {(c.get("alias") or c.get("value") or ""): index[c.get("value") or ""] for c in choices}
        return Interface(OBJECT_KINDS[target.tag], key, control.get("name") or "", target.get("name") or "", classes)
    found = "; ".join(", ".join(map(str, v)) for v in seen) or "no <Choices> at all"
    raise ConfigMismatch(f"the labeling config has no <Choices> whose choices are exactly the task's classes "
                         f"({', '.join(class_names)}); it has: {found}")


class Unreadable(ValueError):
    """Something Label Studio holds that is not in the shape its editor saves (an annotation's result, a task's
    annotations, an id): the bridge records it as unreadable and goes on with the rest."""


def label_of(result: list | None, interface: Interface) -> int | None:
    """The class an annotation's result chooses, or None when it chooses none, several, or one the task lacks.

    Unreadable when a region of the bridge's control is not in the editor's shape ({"value": {"choices": [names]}}):
    Label Studio's API accepts any JSON there, from any user."""
    if result is None:
        return None
    if not isinstance(result, list):
        raise Unreadable(f"its result is a {type(result).__name__}, not a list of regions")
    chosen = set()
    for region in result:
        if not isinstance(region, dict) or region.get("from_name") != interface.control:
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            raise Unreadable(f"its {interface.control!r} region's value is a {type(value).__name__}, not an object")
        choices = value.get("choices")
        if choices is None:
            continue
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise Unreadable(f"its {interface.control!r} region's choices are not a list of class names")
        chosen.update(choices)
    if len(chosen) != 1:
        return None
    return interface.classes.get(chosen.pop())


def result_for(label: int, interface: Interface) -> list[dict]:
    """The result of an annotation choosing class `label` (what Label Studio's editor saves)."""
    name = next(k for k, v in interface.classes.items() if v == label)
    return [{"from_name": interface.control, "to_name": interface.to_name, "type": "choices",
             "value": {"choices": [name]}}]
