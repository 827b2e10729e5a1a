"""Every loader on a team's own data: labeled, partly labeled or not at all, with declared classes, pictures at
a chosen size, opaque ids, the pictures people see, and one clear error naming the file for bad input."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from aal_rpc.data import (UNLABELED, ClassList, load_dataset, load_image, load_task_dataset, load_test_set,
                          read_classes)
from aal_rpc.data.folder import opaque_id
from aal_rpc.types import MAX_IMAGE_BYTES, Task, image_type

pa = pytest.importorskip("pyarrow")  # the parquet extra; installed in dev
pq = pytest.importorskip("pyarrow.parquet")

RED, BLUE = (255, 0, 0), (0, 0, 255)


def picture(path, color=RED, size=(300, 200), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def jpeg_bytes(color=RED, size=(300, 200)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def write_parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return f"parquet:{path}"


# ---- folders ----------------------------------------------------------------------------------------------


def test_a_class_folder_layout_is_labeled_by_folder_with_the_fixed_split(tmp_path):
    for i in range(4):
        picture(tmp_path / "dog" / f"d{i}.jpg", BLUE)
        picture(tmp_path / "cat" / "sub" / f"c{i}.png", RED)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.class_names == ("cat", "dog") and ds.is_fully_labeled and ds.has_test_split
    assert (len(ds.x_pool), len(ds.x_test)) == (6, 2) and ds.input_shape == (3, 32, 32)
    for row, source in enumerate(ds.sources):
        assert ds.y_pool[row] == ds.class_names.index(source.split("/")[0])


def test_a_flat_folder_is_unlabeled_and_needs_declared_classes(tmp_path):
    for i in range(3):
        picture(tmp_path / f"scan_{i}.png")
    with pytest.raises(ValueError, match="declare them with --classes or --classes-file"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", classes=["b", "a"])
    assert ds.class_names == ("b", "a") and (ds.y_pool == UNLABELED).all() and not ds.is_fully_labeled
    assert len(ds.x_pool) == 3 and ds.x_test.shape == (0, 3, 32, 32) and ds.y_test.shape == (0,)
    assert not ds.has_test_split and ds.labeled_rows.tolist() == []


def test_nested_folders_that_are_not_classes_are_unlabeled(tmp_path):
    picture(tmp_path / "2024" / "batch1" / "a.png")
    picture(tmp_path / "loose.png")
    picture(tmp_path / "2025" / "b.png")
    ds = load_dataset(f"folder:{tmp_path}", classes=("x", "y"))
    assert (ds.y_pool == UNLABELED).all() and len(ds.x_pool) == 3


def test_declared_classes_label_their_folders_and_leave_the_rest_unlabeled(tmp_path):
    picture(tmp_path / "zebra" / "1.png", BLUE)
    picture(tmp_path / "apple" / "1.png", RED)
    picture(tmp_path / "apple" / "deep" / "2.png", RED)
    picture(tmp_path / "inbox" / "1.png")
    picture(tmp_path / "top.png")
    ds = load_dataset(f"folder:{tmp_path}", classes=["zebra", "apple"])  # not alphabetical: index = position
    labels = dict(zip(ds.sources, ds.y_pool.tolist()))
    assert labels == {"zebra/1.png": 0, "apple/1.png": 1, "apple/deep/2.png": 1, "inbox/1.png": UNLABELED,
                      "top.png": UNLABELED}
    assert sorted(ds.labeled_rows.tolist()) == sorted(ds.sources.index(s) for s in labels if labels[s] >= 0)
    assert not ds.has_test_split  # partly labeled: every item stays in the pool


def test_ids_are_opaque_stable_hashes_of_the_path(tmp_path):
    picture(tmp_path / "two" / "scan_1782.png")
    picture(tmp_path / "seven" / "scan_1783.png")
    ds = load_dataset(f"folder:{tmp_path}", classes=("two", "seven"))
    for item_id, source in zip(ds.item_ids, ds.sources):
        assert re.fullmatch(r"img-[0-9a-f]{16}", item_id) and item_id == opaque_id(source)
        assert not any(word in item_id for word in ("two", "seven", "scan", "png", "1782"))
    assert load_dataset(f"folder:{tmp_path}", classes=("two", "seven")).item_ids == ds.item_ids


def test_train_and_test_folders_keep_their_split_and_train_may_be_unlabeled(tmp_path):
    for cls, color in (("b", BLUE), ("a", RED)):
        picture(tmp_path / "test" / cls / "0.png", color)
    picture(tmp_path / "train" / "a" / "0.png", RED)
    picture(tmp_path / "train" / "unsorted" / "0.png")
    ds = load_dataset(f"folder:{tmp_path}", classes=("b", "a"))
    assert ds.y_test.tolist() == [1, 0] and sorted(ds.y_pool.tolist()) == [UNLABELED, 1]
    (tmp_path / "train" / "a" / "0.png").unlink()  # train/ without labels: test/ names the classes
    assert load_dataset(f"folder:{tmp_path}").class_names == ("a", "b")
    picture(tmp_path / "test" / "c" / "0.png")
    with pytest.raises(ValueError, match=r"test.c.0\.png: a test picture must sit in a folder named after a class"):
        load_dataset(f"folder:{tmp_path}", classes=("b", "a"))


def test_pictures_take_the_chosen_input_size(tmp_path):
    picture(tmp_path / "a" / "0.jpg", size=(640, 480), fmt="JPEG")
    picture(tmp_path / "b" / "0.gif", size=(30, 90))
    ds = load_dataset(f"folder:{tmp_path}", classes=("a", "b"), input_size=(64, 48))
    assert ds.input_shape == (3, 64, 48) and ds.x_test.shape[1:] == (3, 64, 48)


def test_one_channel_only_when_every_picture_is_grayscale(tmp_path):
    picture(tmp_path / "l.png", 40, mode="L")
    picture(tmp_path / "bits.png", 1, mode="1")
    picture(tmp_path / "la.png", (90, 0), mode="LA")  # transparent: laid on white
    spec, classes = f"folder:{tmp_path}", ("a", "b")
    gray = load_dataset(spec, classes=classes)
    assert gray.input_shape == (1, 32, 32)
    assert np.allclose(gray.x_pool[gray.sources.index("la.png")], 1.0)
    picture(tmp_path / "rgba.png", (0, 0, 0, 0), mode="RGBA")
    mixed = load_dataset(spec, classes=classes)
    assert mixed.input_shape == (3, 32, 32)
    assert np.allclose(mixed.x_pool[mixed.sources.index("rgba.png")], 1.0)
    assert np.array_equal(mixed.x_pool[mixed.sources.index("l.png")], np.repeat(gray.x_pool[gray.sources.index(
        "l.png")], 3, axis=0))


def test_load_image_prepares_a_file_exactly_as_the_pool_does(tmp_path):
    photo = picture(tmp_path / "unsorted" / "photo.jpg", (200, 120, 40), size=(900, 700), fmt="JPEG")
    gray = picture(tmp_path / "unsorted" / "gray.png", 77, size=(50, 70), mode="L")
    ds = load_dataset(f"folder:{tmp_path}", classes=("a", "b"), input_size=(24, 40))
    for path in (photo, gray):
        row = ds.sources.index(path.relative_to(tmp_path).as_posix())
        x = load_image(path, input_size=(24, 40), channels=3)
        assert x.dtype == np.float32 and x.shape == (3, 24, 40) and np.array_equal(x, ds.x_pool[row])
    assert load_image(photo, input_size=(24, 40), channels=1).shape == (1, 24, 40)


# ---- the pictures people see ------------------------------------------------------------------------------


def test_picture_is_the_original_file_when_a_browser_shows_it(tmp_path):
    small = picture(tmp_path / "a.jpg", size=(300, 200), fmt="JPEG")
    ds = load_dataset(f"folder:{tmp_path}", classes=("x", "y"))
    assert ds.picture(0) == small.read_bytes()


def test_big_or_foreign_pictures_are_shown_scaled_down(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1000, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png", compress_level=1)
    assert (tmp_path / "big.png").stat().st_size > MAX_IMAGE_BYTES
    picture(tmp_path / "canvas.png", 0, size=(4097, 4097), mode="1")  # a small file, more pixels than a message may claim
    picture(tmp_path / "scan.tif", size=(300, 200))
    picture(tmp_path / "scan.bmp", size=(30, 20))
    ds = load_dataset(f"folder:{tmp_path}", classes=("x", "y"))
    shown = {source: ds.picture(row) for row, source in enumerate(ds.sources)}
    for source, data in shown.items():
        assert image_type(data) in ("image/png", "image/jpeg") and len(data) <= MAX_IMAGE_BYTES, source
    size = {source: Image.open(io.BytesIO(data)).size for source, data in shown.items()}
    assert size["big.png"] == (800, 1000) and image_type(shown["big.png"]) == "image/jpeg"  # re-encoded
    assert size["canvas.png"] == (1600, 1600)  # fit within DISPLAY_SIZE
    assert size["scan.tif"] == (300, 200) and size["scan.bmp"] == (30, 20)


def test_array_datasets_show_a_png_and_text_shows_nothing(tmp_path):
    digits = load_dataset("digits")
    assert image_type(digits.picture(0)) == "image/png" and digits.sources is None
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    text = load_dataset(write_jsonl(tmp_path / "t.jsonl", rows))
    assert text.picture(0) == b""


# ---- text tables ------------------------------------------------------------------------------------------


def test_jsonl_labels_are_optional_and_map_onto_declared_classes(tmp_path):
    rows = [{"id": "r1", "text": "one", "label": "pos"}, {"id": "r2", "text": "two"},
            {"id": "r3", "text": "three", "label": None}, {"id": "r4", "text": "four", "label": ""},
            {"id": "r5", "text": "five", "label": "neg"}, {"id": "r6", "text": "six", "label": 0}]
    ds = load_dataset(write_jsonl(tmp_path / "r.jsonl", rows), classes=["pos", "neg"])
    assert ds.class_names == ("pos", "neg") and ds.item_ids == ("r1", "r2", "r3", "r4", "r5", "r6")
    assert ds.y_pool.tolist() == [0, UNLABELED, UNLABELED, UNLABELED, 1, 0] and not ds.has_test_split
    unlabeled = write_jsonl(tmp_path / "u.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(ValueError, match="declare them with --classes"):
        load_dataset(unlabeled)
    assert (load_dataset(unlabeled, classes=("x", "y")).y_pool == UNLABELED).all()


def test_a_fully_labeled_table_keeps_the_fixed_held_out_split(tmp_path):
    ds = load_dataset(write_jsonl(tmp_path / "r.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(8)]))
    assert (len(ds.x_pool), len(ds.x_test)) == (6, 2) and ds.is_fully_labeled


def test_csv_without_a_label_column_and_with_some_labels(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text\nfirst\nsecond\n")
    assert (load_dataset(f"csv:{path}", classes=("a", "b")).y_pool == UNLABELED).all()
    path.write_text("text,label\nfirst,b\nsecond,\nthird, a \nfourth,1\n")
    ds = load_dataset(f"csv:{path}", classes=("b", "a"))
    assert ds.y_pool.tolist() == [0, UNLABELED, 1, 1]  # a name, none, a name, an index
    path.write_text("text,label\nfirst,2\nsecond,\nthird,0\n")
    ds = load_dataset(f"csv:{path}")
    assert ds.class_names == ("0", "1", "2") and ds.y_pool.tolist() == [2, UNLABELED, 0]


def test_a_test_row_needs_a_label(tmp_path):
    rows = [{"text": "a", "label": "x", "split": "train"}, {"text": "b", "split": "test"}]
    with pytest.raises(ValueError, match=r"r\.jsonl:2: a test row needs a label"):
        load_dataset(write_jsonl(tmp_path / "r.jsonl", rows), classes=("x", "y"))


# ---- npz --------------------------------------------------------------------------------------------------


def test_npz_without_y_and_with_unlabeled_rows(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((5, 3), np.float32))
    ds = load_dataset(f"npz:{path}", classes=("a", "b"))
    assert (ds.y_pool == UNLABELED).all() and len(ds.x_pool) == 5 and ds.x_test.shape == (0, 3)
    np.savez(path, x=np.zeros((5, 3), np.float32), y=np.array([1, -1, 0, -1, 1]))
    ds = load_dataset(f"npz:{path}")
    assert ds.class_names == ("0", "1") and ds.y_pool.tolist() == [1, UNLABELED, 0, UNLABELED, 1]
    np.savez(path, x=np.zeros((3, 3), np.float32), y=np.array([1, -1, 0]), class_names=np.array(["cat", "dog"]))
    assert load_dataset(f"npz:{path}", classes=("dog", "cat")).y_pool.tolist() == [0, UNLABELED, 1]
    np.savez(path, x=np.zeros((3, 3), np.float32), y=np.array([1, -1, 2]))
    with pytest.raises(ValueError, match=r"d\.npz: y row 2: label 2 is not in \[-1, 2\)"):
        load_dataset(f"npz:{path}", classes=("a", "b"))


def test_built_in_datasets_map_onto_declared_classes_by_name():
    order = tuple(str(c) for c in reversed(range(10)))
    plain, declared = load_dataset("digits"), load_dataset("digits", classes=order)
    assert declared.class_names == order and np.array_equal(declared.y_pool, 9 - plain.y_pool)
    with pytest.raises(ValueError, match="the data's classes 9 are not among the declared classes"):
        load_dataset("digits", classes=order[1:])


# ---- parquet ----------------------------------------------------------------------------------------------


def test_parquet_of_picture_bytes_partly_labeled(tmp_path):
    pictures = [jpeg_bytes(RED), jpeg_bytes(BLUE, (64, 64)), jpeg_bytes(RED, (40, 90))]
    spec = write_parquet(tmp_path / "p.parquet", image=pa.array(pictures, pa.binary()),
                         label=pa.array(["blue", None, "red"]))
    ds = load_dataset(spec, classes=["red", "blue"], input_size=(20, 10))
    assert ds.y_pool.tolist() == [1, UNLABELED, 0] and ds.input_shape == (3, 20, 10)
    assert ds.item_ids == ("0", "1", "2") and ds.sources is None
    assert [ds.picture(r) for r in range(3)] == pictures
    assert ds.x_pool[0, 0].mean() > 0.9 and ds.x_pool[1, 2].mean() > 0.9  # red, blue


def test_parquet_of_picture_paths_with_ids_hashed_from_the_path(tmp_path):
    for name, color in (("dog/1.jpg", BLUE), ("cat/1.jpg", RED)):
        picture(tmp_path / "pics" / name, color, fmt="JPEG")
    absolute = picture(tmp_path / "elsewhere" / "x.png")
    spec = write_parquet(tmp_path / "p.parquet", image=["pics/dog/1.jpg", "pics/cat/1.jpg", str(absolute)],
                         label=pa.array([1, 0, None], pa.int64()))
    ds = load_dataset(spec, classes=("cat", "dog"))
    assert ds.y_pool.tolist() == [1, 0, UNLABELED] and ds.sources[2] == str(absolute)
    assert all(re.fullmatch(r"img-[0-9a-f]{16}", i) for i in ds.item_ids)
    assert ds.picture(1) == (tmp_path / "pics" / "cat" / "1.jpg").read_bytes()


def test_parquet_of_texts_and_of_hugging_face_image_structs(tmp_path):
    spec = write_parquet(tmp_path / "t.parquet", text=["a b", "c d", "e f", "g h"],
                         label=pa.array([1.0, None, 0.0, float("nan")]), id=["x", "y", "z", "w"])
    ds = load_dataset(spec)
    assert ds.class_names == ("0", "1") and ds.y_pool.tolist() == [1, UNLABELED, 0, UNLABELED]
    assert ds.texts == ("a b", "c d", "e f", "g h") and ds.item_ids == ("x", "y", "z", "w")
    picture(tmp_path / "on_disk.png")
    cells = [{"bytes": jpeg_bytes(), "path": None}, {"bytes": None, "path": "on_disk.png"}]
    ds = load_dataset(write_parquet(tmp_path / "hf.parquet", image=cells), classes=("a", "b"))
    assert ds.picture(0) == cells[0]["bytes"] and ds.picture(1) == (tmp_path / "on_disk.png").read_bytes()


def test_parquet_needs_pyarrow_and_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match=re.escape("needs pyarrow (pip install 'aal-rpc[parquet]')")):
        load_dataset(f"parquet:{tmp_path / 'p.parquet'}")


# ---- declared classes, test sets, tasks -------------------------------------------------------------------


def test_read_classes_from_the_option_or_a_file(tmp_path):
    assert read_classes(" cat, dog ,bird", None) == ClassList(("cat", "dog", "bird"), ())
    assert read_classes(None, None) == ClassList(())
    path = tmp_path / "classes.txt"
    path.write_text("# the classes\ncat\tsmall, whiskers\n\ndog\n")
    assert read_classes(None, path) == ClassList(("cat", "dog"), ("small, whiskers", ""))
    for text, match in (("cat\ncat\n", "more than once: cat"), ("cat\n", "at least two"), ("a\n\tx\n", "empty")):
        path.write_text(text)
        with pytest.raises(ValueError, match=f"classes.txt: .*{match}"):
            read_classes(None, path)
    with pytest.raises(ValueError, match="not both"):
        read_classes("a,b", path)
    with pytest.raises(ValueError, match="--classes: a class name is empty"):
        read_classes("a,,b", None)


def test_a_task_is_evaluated_on_its_own_test_set(tmp_path):
    for cls, shade in (("cat", 50), ("dog", 200)):
        picture(tmp_path / "test" / cls / "0.png", shade, mode="L")  # grayscale, where the pool is in colour
    picture(tmp_path / "pool" / "0.png", 10, mode="L")
    picture(tmp_path / "pool" / "1.png", (0, 200, 0))
    task = Task(dataset=f"folder:{tmp_path / 'pool'}", num_classes=2, class_names=("dog", "cat"),
                input_shape=(3, 16, 12), architecture="cnn", input_size=(16, 12),
                test_dataset=f"folder:{tmp_path / 'test'}")
    ds = load_task_dataset(task)
    assert ds.x_pool.shape == (2, 3, 16, 12) and ds.x_test.shape == (2, 3, 16, 12)
    assert ds.y_test.tolist() == [1, 0] and (ds.y_pool == UNLABELED).all()
    assert np.allclose(ds.x_test[:, :, 0, 0], [[50 / 255] * 3, [200 / 255] * 3])  # channels repeated
    x, y = load_test_set(f"folder:{tmp_path / 'test'}", classes=("cat", "dog"), input_size=None)
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [0, 1]


def test_a_test_set_with_other_classes_or_no_labels_is_refused(tmp_path):
    spec = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "cat"}, {"text": "b", "label": "fox"}])
    with pytest.raises(ValueError, match=r"test set: .*t\.jsonl:2: class 'fox' is not among the declared classes"):
        load_test_set(spec, classes=("cat", "dog"), input_size=None)
    picture(tmp_path / "imgs" / "cat" / "0.png")
    picture(tmp_path / "imgs" / "fox" / "0.png")
    with pytest.raises(ValueError, match=r"items have no label, or classes not in the task .*fox/0\.png"):
        load_test_set(f"folder:{tmp_path / 'imgs'}", classes=("cat", "dog"), input_size=None)


# ---- bad input: one clear line naming the file ------------------------------------------------------------


def test_unreadable_and_truncated_pictures_name_the_file(tmp_path):
    good = picture(tmp_path / "a" / "good.png")
    (tmp_path / "a" / "bad.png").write_text("not a picture")
    with pytest.raises(ValueError, match=r"bad\.png: not a readable picture"):
        load_dataset(f"folder:{tmp_path}", classes=("a", "b"))
    (tmp_path / "a" / "bad.png").write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"bad\.png: not a readable picture"):
        load_dataset(f"folder:{tmp_path}", classes=("a", "b"))
    data = jpeg_bytes()
    spec = write_parquet(tmp_path / "p.parquet", image=pa.array([data, data[: len(data) // 2]], pa.binary()))
    with pytest.raises(ValueError, match=r"p\.parquet row 1: not a readable picture"):
        load_dataset(spec, classes=("a", "b"))


@pytest.mark.parametrize("classes, match", [(None, "no pictures"), (("a",), "at least two classes")])
def test_an_empty_folder_or_a_single_class_is_refused(tmp_path, classes, match):
    (tmp_path / "notes.txt").write_text("no pictures here")
    if classes:
        picture(tmp_path / "x.png")
    with pytest.raises(ValueError, match=match):
        load_dataset(f"folder:{tmp_path}", classes=classes)


def test_duplicate_ids_and_unknown_classes_name_the_row(tmp_path):
    spec = write_parquet(tmp_path / "p.parquet", text=["a", "b", "c"], id=["x", "y", "x"])
    with pytest.raises(ValueError, match=r"p\.parquet row 2: duplicate id 'x' \(first at .*p\.parquet row 0\)"):
        load_dataset(spec, classes=("a", "b"))
    spec = write_parquet(tmp_path / "q.parquet", text=["a", "b"], label=["cat", "cow"])
    with pytest.raises(ValueError, match=r"q\.parquet row 1: class 'cow' is not among the declared classes"):
        load_dataset(spec, classes=("cat", "dog"))
    spec = write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 5}])
    with pytest.raises(ValueError, match=r"r\.jsonl:2: label 5 is no class index"):
        load_dataset(spec, classes=("cat", "dog"))


def test_a_photo_stored_sideways_is_read_upright_as_people_see_it(tmp_path):
    from PIL import Image

    from aal_rpc.data import load_image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white as stored
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    img.save(tmp_path / "p.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "p.jpg", input_size=(40, 20), channels=3)  # (C, H, W): upright it is 40 high
    assert x.shape == (3, 40, 20)
    assert x[:, :15].mean() > 0.8 and x[:, 25:].mean() < 0.2  # the white half is now on top
