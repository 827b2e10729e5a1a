"""`cifar10:DIR` reads CIFAR-10's binary files with numpy: tested on small files written in the real format."""

import numpy as np
import pytest

from aal_rpc.data import load_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root, per_batch=(3, 2, 4, 1, 2), test=3, seed=0):
    """Binary CIFAR-10 files: records of 1 label byte + 3072 pixel bytes (R, G, B planes, row-major)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [*((f"data_batch_{i + 1}.bin", k) for i, k in enumerate(per_batch)), ("test_batch.bin", test)]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
        records.tofile(root / name)
        written[name] = (images, labels)
    (root / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return written


def test_reads_pool_and_test_in_chw_order(tmp_path):
    written = write_cifar(tmp_path)
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.class_names == tuple(CLASSES) and ds.input_shape == (3, 32, 32)
    train = [written[f"data_batch_{i}.bin"] for i in range(1, 6)]
    images = np.concatenate([im for im, _ in train])
    assert len(ds.x_pool) == 12 and ds.x_pool.dtype == np.float32
    np.testing.assert_allclose(ds.x_pool, images / 255.0, rtol=1e-6)
    assert ds.y_pool.tolist() == np.concatenate([lab for _, lab in train]).tolist()
    test_images, test_labels = written["test_batch.bin"]
    np.testing.assert_allclose(ds.x_test, test_images / 255.0, rtol=1e-6)
    assert ds.y_test.tolist() == test_labels.tolist()
    assert ds.item_ids == tuple(str(i) for i in range(12))


def test_pixel_planes_are_red_green_blue(tmp_path):
    """A record whose red plane is 255 and the rest 0 is a red image (channel 0), not a striped one."""
    write_cifar(tmp_path)
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    record[1:1025] = 255
    record.tofile(tmp_path / "test_batch.bin")
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.y_test.tolist() == [7]
    assert (ds.x_test[0, 0] == 1.0).all() and not ds.x_test[0, 1:].any()


def test_accepts_the_unpacked_archive_folder(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-bin")
    assert len(load_dataset(f"cifar10:{tmp_path}").x_pool) == 12


def test_missing_or_truncated_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin.*binary version"):
        load_dataset(f"cifar10:{tmp_path}")
    write_cifar(tmp_path)
    with open(tmp_path / "data_batch_3.bin", "ab") as f:
        f.write(b"\x01\x02")
    with pytest.raises(ValueError, match="data_batch_3.bin.*3073-byte records"):
        load_dataset(f"cifar10:{tmp_path}")
