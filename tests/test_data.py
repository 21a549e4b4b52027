import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from genbench.config import DataConfig
from genbench.data import load_data
from genbench.data.sources import read_idx
from genbench.data.transforms import prepare, to_model_range
from genbench.utils.errors import DataError


def test_digits_split_is_seeded_disjoint_and_recorded():
    a = load_data(DataConfig(source="digits", resolution=8, split_seed=3))
    b = load_data(DataConfig(source="digits", resolution=8, split_seed=3))
    c = load_data(DataConfig(source="digits", resolution=8, split_seed=4))
    assert torch.equal(a.train.source_index, b.train.source_index)
    assert not torch.equal(a.train.source_index, c.train.source_index)
    assert set(a.train.source_index.tolist()).isdisjoint(a.holdout.source_index.tolist())
    # The validation slice (evaluate()'s images) comes out of the training pool, disjoint.
    va = set(a.validation.source_index.tolist())
    assert va.isdisjoint(a.train.source_index.tolist()) and va.isdisjoint(
        a.holdout.source_index.tolist()
    )
    assert len(a.validation) == min(512, (1797 - round(1797 * 0.2)) // 10) == 143
    assert len(a.train) + len(a.validation) + len(a.holdout) == 1797
    assert a.split["n_validation"] == 143 and a.split["validation_index_sha256"]
    assert a.split["method"] == "random" and a.split["n_holdout"] == round(1797 * 0.2)
    assert a.spec.condition == "classes" and a.spec.num_classes == 10 and a.spec.channels == 1


def test_pipeline_resizes_crops_and_maps_to_unit_range():
    d = load_data(DataConfig(source="digits", resolution=16))
    assert d.train.images.shape[1:] == (1, 16, 16) and d.train.images.dtype == torch.uint8
    x, y = d.train.batch(torch.arange(8))
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32 and y.dtype == torch.int64
    assert to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    # Non-square input: shorter side to R, then a center crop.
    img = torch.zeros(1, 3, 20, 40, dtype=torch.uint8)
    img[..., 10:30] = 255
    out = prepare(img, resolution=10, channels=3)
    assert (
        out.shape == (1, 3, 10, 10) and out[..., 1:9].min() == 255
    )  # the bright middle survives the crop


def test_channel_conversion():
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert prepare(rgb, resolution=8, channels=1).shape == (2, 1, 8, 8)
    gray = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(prepare(gray, resolution=8, channels=3)[:, 2], gray[:, 0])


def _save(path, mode="RGB", size=(12, 12), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_with_class_subfolders_skips_and_counts_bad_files(tmp_path):
    for i in range(6):
        _save(tmp_path / "cats" / f"{i}.png")
        _save(tmp_path / "dogs" / "nested" / f"{i}.jpg", color=(0, 0, 200))
    _save(tmp_path / "dogs" / ".hidden.png")
    (tmp_path / "cats" / "broken.png").write_bytes(b"not an image")
    cfg = DataConfig(source="folder", root=str(tmp_path), resolution=8, max_bad_fraction=0.2)
    d = load_data(cfg)
    assert d.spec.class_names == ("cats", "dogs") and d.spec.channels == 3
    assert len(d.train) + len(d.validation) + len(d.holdout) == 12  # validation: 1 of 10
    assert d.split["skipped_files"] == 1 and "broken.png" in d.split["skipped_examples"][0]
    with pytest.raises(DataError, match="could not be read"):
        load_data(cfg.model_copy(update={"max_bad_fraction": 0.0}))


def test_flat_folder_is_unconditional_and_grayscale(tmp_path):
    for i in range(5):
        _save(tmp_path / f"{i}.png", mode="L", color=100)
    d = load_data(DataConfig(source="folder", root=str(tmp_path), resolution=8))
    assert d.spec.condition == "none" and d.spec.channels == 1 and d.train.labels is None


def test_utkface_labels_from_file_names(tmp_path):
    names = [
        "25_0_2_2017.jpg",
        "31_1_3_2017.jpg.chip.jpg",
        "8_0_0_2017.jpg",
        "40_1_1_x.jpg",
        "bad_name.jpg",
    ]
    for n in names:
        _save(tmp_path / n)
    d = load_data(
        DataConfig(
            source="utkface",
            root=str(tmp_path),
            resolution=8,
            label="race",
            max_bad_fraction=0.5,
            holdout_fraction=0.25,
        )
    )
    labels = sorted(torch.cat([d.train.labels, d.holdout.labels]).tolist())
    assert labels == [0, 1, 2, 3] and d.spec.class_names[2] == "asian"
    assert d.split["skipped_files"] == 1
    g = load_data(
        DataConfig(
            source="utkface", root=str(tmp_path), resolution=8, label="gender", max_bad_fraction=0.5
        )
    )
    assert g.spec.class_names == ("male", "female")


def test_empty_or_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no readable images"):
        load_data(DataConfig(source="folder", root=str(tmp_path), resolution=8))
    with pytest.raises(DataError, match="not a folder"):
        load_data(DataConfig(source="folder", root=str(tmp_path / "nope"), resolution=8))
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_data(DataConfig(source="digit", resolution=8))


def test_idx_reader_and_fashion_mnist_from_genbench_data(tmp_path, monkeypatch):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    rng = np.random.default_rng(0)

    def idx(name, arr):
        header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        with gzip.open(root / f"{name}.gz", "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())

    idx("train-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    idx("train-labels-idx1-ubyte", np.arange(20) % 10)
    idx("t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28)))
    idx("t10k-labels-idx1-ubyte", np.arange(10))
    assert read_idx(root / "train-images-idx3-ubyte.gz").shape == (20, 28, 28)
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    d = load_data(DataConfig(source="fashion-mnist", resolution=32))
    assert d.split["method"] == "official" and len(d.holdout) == 10
    assert len(d.train) == 18 and len(d.validation) == 2  # a tenth set aside for evaluate()
    assert d.train.images.shape[1:] == (1, 32, 32) and d.spec.class_names[0] == "t-shirt"
