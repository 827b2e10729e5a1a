"""A team labels its own data, end to end: a flat folder of unlabeled pictures (of any size, opaque names) and a
jsonl of unlabeled texts go through the installed commands as separate processes, with a person labeling in aal-web
in a real browser (chromium, driven by selenium). Models are published, the audit's estimate is reported, and the
model is taken out and used on files the system never saw.

The person decides from what the page shows, as a person would: the picture's colour, the text's words.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import uuid

import numpy as np
import pytest
from PIL import Image

from aal_rpc.experiment.processes import command
from tests.conftest import wait_until
from tests.test_web import browsers, start_web  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.e2e

CLASSES = "red\tpictures that are mostly red\nblue\tpictures that are mostly blue\n"  # not alphabetical on purpose
GUIDELINES = "# How to label\n\nLook at the **main colour**. Skip pictures you cannot see.\n"
PER_CLASS = 30  # pool pictures of each colour
TRAINER = ("--epochs", "4", "--min-steps", "40", "--min-labels", "4", "--threads", "1")

TOPICS = {
    "sports": "match goal team player score league coach referee stadium season win",
    "cooking": "recipe oven flour bake salt butter pan simmer garlic onion dough",
}


def admin(address: str, *args: str) -> str:
    return subprocess.run(command("admin", "--coordinator", address, *args), check=True, capture_output=True,
                          text=True, timeout=120).stdout


def picture(colour: str, rng: np.random.Generator) -> Image.Image:
    """A photo-sized picture, mostly `colour`, with noise and a box of another colour somewhere."""
    w, h = int(rng.integers(90, 200)), int(rng.integers(60, 150))
    base = np.array([200, 40, 40] if colour == "red" else [40, 60, 210], dtype=float)
    arr = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    arr[y0:y0 + h // 4, x0:x0 + w // 4] = rng.integers(0, 255, 3)
    return Image.fromarray(arr.astype(np.uint8))


def write_pictures(folder, n_per_class: int, seed: int) -> dict[str, str]:
    """Pictures under opaque names, half JPEG and half PNG; {file name: colour}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    truth = {}
    for colour in ("red", "blue"):
        for i in range(n_per_class):
            name = f"{uuid.UUID(int=int(rng.integers(1 << 62))).hex}.{'jpg' if i % 2 else 'png'}"
            picture(colour, rng).save(folder / name)
            truth[name] = colour
    return truth


def colour_of(data_url: str) -> str:
    header, _, data = data_url.partition(",")
    with Image.open(io.BytesIO(base64.b64decode(data))) as img:
        r, _, b = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    return "red" if r > b else "blue"


def words_of(text: str) -> str:
    score = {topic: sum(w in text.split() for w in words.split()) for topic, words in TOPICS.items()}
    return max(score, key=score.get)


def a_text(topic: str, rng: np.random.Generator) -> str:
    words = TOPICS[topic].split()
    filler = "the a of and today we it was".split()
    return " ".join(rng.choice(words + filler, size=int(rng.integers(8, 16))))


def label_in_browser(page, classes: tuple[str, ...], decide, n: int, pages: list | None = None) -> dict[str, int]:
    """A person labels n items by what the page shows; {what was shown: class index}. `pages` collects the
    page's HTML at each item. The page names the item on screen only by its lease (data-lease)."""
    from selenium.webdriver.common.by import By

    def lease() -> str:
        return page.el("stage").get_attribute("data-lease") or ""

    done = {}
    for _ in range(n):
        page.wait(lease, "an item on screen")
        before = lease()
        stage = page.el("stage")
        images = stage.find_elements(By.TAG_NAME, "img")
        shown = images[0].get_attribute("src") if images else stage.text
        if pages is not None:
            pages.append(page.driver.page_source)
        cls = classes.index(decide(shown))
        page.click(f'button.class[data-class="{cls}"]')
        page.wait(lambda: lease() not in ("", before), "the next item")
        done[shown[-64:]] = cls
    return done


def start_system(procs, tmp_path, dataset: str, *options: str, model: str) -> str:
    _, address = procs.start_coordinator("coordinator", [
        "--data-dir", tmp_path / "data", "--dataset", dataset, "--model", model, "--lease-seconds", "60", *options])
    procs.start("server", command("server", "--coordinator", address, "--server-id", "s0", *TRAINER))
    procs.start("worker", command("worker", "--coordinator", address, "--strategy", "margin", "--batch-size", "8",
                                  "--poll-seconds", "0.2", "--threads", "1"))
    return address


def wait_for_estimate(address: str) -> dict:
    """aal-admin stats once the latest model was evaluated on at least two audit labels."""
    def ready():
        est = json.loads(admin(address, "stats", "--json")).get("estimated_accuracy")
        return est is not None and est["labels"] >= 2
    assert wait_until(ready, timeout=120), admin(address, "stats")
    return json.loads(admin(address, "stats", "--json"))


def test_a_team_labels_a_flat_folder_of_its_own_pictures_in_the_browser(tmp_path, procs, browsers):  # noqa: F811
    truth = write_pictures(tmp_path / "photos", PER_CLASS, seed=1)
    (tmp_path / "classes.txt").write_text(CLASSES)
    (tmp_path / "guidelines.md").write_text(GUIDELINES)
    address = start_system(procs, tmp_path, f"folder:{tmp_path / 'photos'}",
                           "--classes-file", tmp_path / "classes.txt", "--guidelines", tmp_path / "guidelines.md",
                           "--input-size", "24x16", "--audit-share", "0.2", model="cnn")
    task = json.loads(admin(address, "stats", "--json"))
    assert task["labeled"] == 0  # nothing imported: the folder has no labels
    web = start_web(procs, address, "--lease-seconds", "60")
    page = browsers()
    page.login(f"http://{web}/", name="alice")
    page.wait(lambda: page.el("stage").get_attribute("data-lease"), "the first item")

    # what the person sees: the declared classes in the team's order with their guidance, the guidelines, and the
    # original file (its own type and size), never a name or id that could give the answer away
    buttons = page.driver.find_elements(page.by.CSS_SELECTOR, "button.class")
    assert [b.get_attribute("data-class") for b in buttons] == ["0", "1"]
    assert "red" in buttons[0].text and "mostly red" in buttons[0].text
    assert "main colour" in page.el("guidelines").text
    img = page.el("stage").find_element(page.by.TAG_NAME, "img")
    assert img.get_attribute("src").startswith(("data:image/jpeg", "data:image/png"))
    natural = page.driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    assert natural[0] >= 90 and natural[1] >= 60  # not a 24x16 thumbnail
    seen: list[str] = []
    labeled = label_in_browser(page, ("red", "blue"), colour_of, 36, seen)
    assert len(labeled) >= 30

    stats = wait_for_estimate(address)
    est = stats["estimated_accuracy"]
    assert 0 <= est["low"] <= est["value"] <= est["high"] <= 1
    assert stats["label_origins"]["audit"] >= 2 and stats["label_origins"]["model"] >= 1
    models = admin(address, "models")
    assert "version" in models

    export = tmp_path / "labels.jsonl"
    admin(address, "export", "--format", "jsonl", "--out", str(export), "--sources")
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert rows and all(r["label_name"] == ("red", "blue")[r["label"]] for r in rows)
    assert all(truth[r["source"]] == r["label_name"] for r in rows)  # the person labeled what they saw
    for html in seen:  # no item id, file name or class folder reached the page
        assert not any(r["item_id"] in html or r["source"].split(".")[0] in html for r in rows)

    out = tmp_path / "model"

    fresh = write_pictures(tmp_path / "new", 6, seed=99)
    predictions: list[dict] = []

    def predicts_new_files() -> bool:
        """The trainer keeps going: take the newest model once it saw most of the labels, and keep taking newer ones
        until one classifies the files the system never saw (a round the pace cut short on a loaded machine may
        not yet)."""
        admin(address, "model", "--out", str(out))
        if json.loads((out / "card.json").read_text())["labels_seen"] < 20:
            return False
        lines = admin(address, "predict", "--model", str(out), *sorted(str(tmp_path / "new" / n) for n in fresh))
        predictions[:] = [json.loads(line) for line in lines.splitlines()]
        return sum(p["class"] == fresh[p["path"].rsplit("/", 1)[1]] for p in predictions) >= 10  # of 12
    assert wait_until(predicts_new_files, timeout=120), (predictions, admin(address, "models"))
    card = json.loads((out / "card.json").read_text())
    assert card["classes"] == ["red", "blue"] and card["input_shape"] == [3, 16, 24]
    assert len(predictions) == len(fresh)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)


def test_a_team_labels_its_own_unlabeled_texts_in_the_browser(tmp_path, procs, browsers):  # noqa: F811
    rng = np.random.default_rng(3)
    topics = [("sports", "cooking")[i % 2] for i in range(60)]
    rows = [{"id": f"t{i}", "text": a_text(t, rng)} for i, t in enumerate(topics)]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    address = start_system(procs, tmp_path, f"jsonl:{path}", "--classes", "sports,cooking", "--audit-share",
                           "0.2", model="text")
    web = start_web(procs, address, "--lease-seconds", "60")
    page = browsers()
    page.login(f"http://{web}/", name="bob")
    labeled = label_in_browser(page, ("sports", "cooking"), words_of, 30)
    assert len(labeled) >= 25

    stats = wait_for_estimate(address)
    assert stats["estimated_accuracy"]["value"] >= 0  # reported, with its interval
    out = tmp_path / "model"
    admin(address, "model", "--out", str(out))
    files = []
    for i, topic in enumerate(["sports", "cooking"] * 4):
        f = tmp_path / f"new-{i}.txt"
        f.write_text(" ".join(TOPICS[topic].split()[:6]))
        files.append((f, topic))
    lines = admin(address, "predict", "--model", str(out), *(str(f) for f, _ in files))
    predicted = [json.loads(line)["class"] for line in lines.splitlines()]
    assert sum(p == t for p, (_, t) in zip(predicted, files)) >= 6, predicted
