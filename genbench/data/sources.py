"""Dataset sources. Each returns raw uint8 images and labels, with the official
test split where the dataset has one; :mod:`genbench.data` does the rest."""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genbench.utils.errors import DataError

IMAGE_EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
}


@dataclass
class RawSplit:
    images: torch.Tensor | list[torch.Tensor]  # uint8, N x C x H x W or a list of C x H x W
    labels: torch.Tensor | None  # int64 (N,) classes, float (N, A) attributes, or None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class RawData:
    train: RawSplit
    test: RawSplit | None  # the official held-out split, if the dataset has one
    class_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    skipped: int = 0  # unreadable files that were passed over
    skipped_examples: list[str] = field(default_factory=list)
    origin: str = ""  # where the files were found
    notes: list[str] = field(default_factory=list)  # warnings recorded with the split


@dataclass(frozen=True)
class SourceInfo:
    name: str
    description: str
    loader: Callable[..., RawData]
    availability: str  # how it is had: bundled, local files, or local files / download


SOURCES: dict[str, SourceInfo] = {}


def source(name: str, description: str, *, availability: str = "local files or download"):
    def deco(fn: Callable[..., RawData]) -> Callable[..., RawData]:
        SOURCES[name] = SourceInfo(name, description, fn, availability)
        return fn

    return deco


def data_roots(root: str | None) -> list[Path]:
    """Where downloadable datasets are looked for, in order."""
    roots = []
    if root:
        roots.append(Path(root).expanduser())
    if env := os.environ.get("GENBENCH_DATA"):
        roots.append(Path(env).expanduser())
    if env := os.environ.get("TORCHVISION_DATA"):
        roots.append(Path(env).expanduser())
    roots.append(Path.home() / ".cache" / "genbench" / "data")
    return roots


# -- digits -----------------------------------------------------------------
@source(
    "digits",
    "scikit-learn's bundled 8x8 digits, 10 classes (offline; the test fixture)",
    availability="bundled",
)
def load_digits_source(*, root: str | None = None, label: str = "") -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 0..16 intensities -> 0..255
    imgs = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawData(
        train=RawSplit(torch.from_numpy(imgs), torch.from_numpy(d.target.astype(np.int64))),
        test=None,
        class_names=tuple(str(i) for i in range(10)),
        origin="sklearn.datasets.load_digits",
    )


# -- IDX (MNIST-format) files -------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape)


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for suffix in ("", ".gz"):
            p = d / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _load_idx_dataset(
    *,
    name: str,
    tv_name: str,
    extra_dirs: list[Path],
    root: str | None,
    class_names: tuple[str, ...],
    hint: str,
) -> RawData:
    dirs = []
    for r in data_roots(root):
        dirs += [r, r / name, r / tv_name / "raw"]
    dirs += extra_dirs
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    paths = [_find_idx(dirs, s) for s in stems]
    if any(p is None for p in paths):
        _download_torchvision(
            tv_name, data_roots(root)[0] if root else data_roots(None)[-1], hint=hint, looked=dirs
        )
        paths = [_find_idx(dirs, s) for s in stems]
        if any(p is None for p in paths):
            raise DataError(
                f"{tv_name} was downloaded but its IDX files are not where expected; {hint}"
            )
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    return RawData(
        train=RawSplit(
            torch.from_numpy(xtr.copy())[:, None], torch.from_numpy(ytr.astype(np.int64))
        ),
        test=RawSplit(
            torch.from_numpy(xte.copy())[:, None], torch.from_numpy(yte.astype(np.int64))
        ),
        class_names=class_names,
        origin=str(paths[0].parent),  # type: ignore[union-attr]
    )


def _download_torchvision(tv_name: str, root: Path, *, hint: str, looked: list[Path]) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, tv_name)(root=str(root), train=True, download=True)
        getattr(torchvision.datasets, tv_name)(root=str(root), train=False, download=True)
    except Exception as exc:  # no network, or a mirror refused: say what to do instead
        shown = ", ".join(str(p) for p in looked[:4])
        raise DataError(
            f"{tv_name} files not found (looked in {shown}, ...) and the download failed "
            f"({type(exc).__name__}); {hint}"
        ) from None


FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


@source("fashion-mnist", "Fashion-MNIST 28x28 grayscale, 10 classes, 60k train / 10k test")
def load_fashion_mnist(*, root: str | None = None, label: str = "") -> RawData:
    return _load_idx_dataset(
        name="fashion-mnist",
        tv_name="FashionMNIST",
        extra_dirs=[Path("/usr/share/datasets/fashion-mnist")],
        root=root,
        class_names=FASHION_CLASSES,
        hint="offline: `apt-get install dataset-fashion-mnist`, or put the four IDX files in $GENBENCH_DATA/fashion-mnist",
    )


@source("mnist", "MNIST 28x28 grayscale digits, 10 classes, 60k train / 10k test")
def load_mnist(*, root: str | None = None, label: str = "") -> RawData:
    return _load_idx_dataset(
        name="mnist",
        tv_name="MNIST",
        extra_dirs=[Path("/usr/share/datasets/mnist")],
        root=root,
        class_names=tuple(str(i) for i in range(10)),
        hint="put the four MNIST IDX files in $GENBENCH_DATA/mnist",
    )


# -- torchvision datasets ------------------------------------------------------
@source("cifar10", "CIFAR-10 32x32 RGB, 10 classes, 50k train / 10k test (torchvision)")
def load_cifar10(*, root: str | None = None, label: str = "") -> RawData:
    import torchvision

    def get(train: bool):
        last: Exception | None = None
        for r in data_roots(root):
            try:
                return torchvision.datasets.CIFAR10(root=str(r), train=train, download=False)
            except RuntimeError as exc:
                last = exc
        try:
            return torchvision.datasets.CIFAR10(
                root=str(data_roots(root)[-1]), train=train, download=True
            )
        except Exception as exc:
            raise DataError(
                f"CIFAR-10 not found under {', '.join(map(str, data_roots(root)))} and the download failed "
                f"({type(exc).__name__}: {last}); put cifar-10-batches-py in $GENBENCH_DATA"
            ) from None

    tr, te = get(True), get(False)
    to_t = lambda ds: torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return RawData(
        train=RawSplit(to_t(tr), torch.tensor(tr.targets, dtype=torch.int64)),
        test=RawSplit(to_t(te), torch.tensor(te.targets, dtype=torch.int64)),
        class_names=tuple(tr.classes),
        origin=tr.root,
    )


@source("celeba", "CelebA aligned faces, RGB, 40 binary attributes (torchvision)")
def load_celeba(*, root: str | None = None, label: str = "") -> RawData:
    import torchvision

    def get(split: str):
        for r in data_roots(root):
            try:
                return torchvision.datasets.CelebA(
                    root=str(r), split=split, target_type="attr", download=False
                )
            except RuntimeError:
                continue
        try:
            return torchvision.datasets.CelebA(
                root=str(data_roots(root)[-1]), split=split, target_type="attr", download=True
            )
        except Exception as exc:
            raise DataError(
                f"CelebA not found under {', '.join(map(str, data_roots(root)))} and the download failed "
                f"({type(exc).__name__}); put the 'celeba' folder (img_align_celeba/ and list_attr_celeba.txt) "
                "in $GENBENCH_DATA"
            ) from None

    out = []
    for split in ("train", "test"):
        ds = get(split)
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
        images, keep = _read_image_files([folder / f for f in ds.filename])
        attrs = ds.attr[keep].float()
        out.append((RawSplit(images, attrs), ds))
    names = tuple(n for n in out[0][1].attr_names if n)
    return RawData(
        train=out[0][0], test=out[1][0], attribute_names=names, origin=str(out[0][1].root)
    )


# -- image folders ---------------------------------------------------------------
def decode_image(path: Path) -> torch.Tensor | None:
    """One image file -> uint8 C x H x W (1 or 3 channels), or None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return None
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if arr.max() > 255 else 255.0
                arr = np.rint(arr * (255.0 / peak)).clip(0, 255).astype(np.uint8)
                return torch.from_numpy(arr)[None]
            if mode in ("1", "L", "LA") or (mode == "P" and _palette_is_gray(im)):
                return torch.from_numpy(np.asarray(im.convert("L")).copy())[None]
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                # Composite transparency over white rather than keeping whatever is under alpha=0.
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im2 = Image.alpha_composite(bg, rgba).convert("RGB")
            else:
                im2 = im.convert("RGB")
            return torch.from_numpy(np.asarray(im2).copy()).permute(2, 0, 1).contiguous()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _palette_is_gray(im) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _is_image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _read_image_files(files: list[Path]) -> tuple[list[torch.Tensor], torch.Tensor]:
    images, keep = [], []
    for i, f in enumerate(files):
        img = decode_image(f)
        if img is not None:
            images.append(img)
            keep.append(i)
    if any(img.shape[0] == 3 for img in images):
        # A folder mixing gray and colour files is colour: one channel count for the batch.
        images = [img.expand(3, -1, -1) if img.shape[0] == 1 else img for img in images]
    return images, torch.tensor(keep, dtype=torch.int64)


def _require_root(root: str | None, source_name: str) -> Path:
    if not root:
        raise DataError(f"data source '{source_name}' needs data.root = the image folder")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    return p


@source(
    "folder",
    "an image folder: one subfolder per class, or flat (unconditional)",
    availability="data.root",
)
def load_folder(*, root: str | None = None, label: str = "") -> RawData:
    base = _require_root(root, "folder")
    subdirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    top = sorted(p for p in base.iterdir() if _is_image_file(p))
    files, labels, names, notes = [], [], [], []
    for d in subdirs:
        # Images anywhere below a class folder belong to it (nested folders are part of the class).
        found = sorted(p for p in d.rglob("*") if _is_image_file(p) and not _hidden_below(p, d))
        if not found:
            notes.append(f"class folder '{d.name}' holds no image files; dropped")
            continue
        names.append(d.name)
        files += found
        labels += [len(names) - 1] * len(found)
    if not names:  # no class folders with images: a flat, unconditional folder
        raw = _from_files(top, None, class_names=(), origin=str(base))
        raw.notes = notes
        return raw
    if top:
        notes.append(f"{len(top)} image(s) directly in {base} ignored: class folders are used")
    raw = _from_files(files, labels, class_names=tuple(names), origin=str(base))
    raw.notes = notes + _drop_empty_classes(raw)
    return raw


def _drop_empty_classes(raw: RawData) -> list[str]:
    """Classes left with no readable image are dropped and the labels renumbered:
    a class with nothing to learn from cannot be sampled or scored."""
    labels = raw.train.labels
    assert labels is not None
    counts = torch.bincount(labels, minlength=len(raw.class_names))
    empty = [raw.class_names[i] for i in range(len(counts)) if counts[i] == 0]
    if not empty:
        return []
    keep = torch.nonzero(counts > 0).flatten()
    remap = torch.full((len(counts),), -1, dtype=torch.int64)
    remap[keep] = torch.arange(len(keep))
    raw.train.labels = remap[labels]
    raw.class_names = tuple(raw.class_names[i] for i in keep.tolist())
    return [f"class folder '{name}' holds no readable image; dropped" for name in empty]


def _hidden_below(p: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(top).parts)


UTK_FIELDS = {
    "gender": ("male", "female"),
    "race": ("white", "black", "asian", "indian", "others"),
    "age": tuple(f"{10 * i}-{10 * i + 9}" for i in range(12)),
}
UTK_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_")


@source(
    "utkface",
    "UTKFace-style flat folder, labels from 'age_gender_race_date.jpg' (data.label)",
    availability="data.root",
)
def load_utkface(*, root: str | None = None, label: str = "race") -> RawData:
    base = _require_root(root, "utkface")
    if label not in UTK_FIELDS:
        raise DataError(f"data.label {label!r} is not one of {', '.join(UTK_FIELDS)} for utkface")
    files, labels, unparsed = [], [], []
    for p in sorted(base.rglob("*")):
        if not _is_image_file(p) or _hidden_below(p, base):
            continue
        m = UTK_NAME.match(p.name)
        if not m:
            unparsed.append(p.name)
            continue
        age, gender, race = (int(x) for x in m.groups())
        value = {"age": min(age // 10, 11), "gender": gender, "race": race}[label]
        if value >= len(UTK_FIELDS[label]):
            unparsed.append(p.name)
            continue
        files.append(p)
        labels.append(value)
    raw = _from_files(files, labels, class_names=UTK_FIELDS[label], origin=str(base))
    raw.skipped += len(unparsed)
    raw.skipped_examples = (unparsed + raw.skipped_examples)[:5]
    return raw


def _from_files(
    files: list[Path], labels: list[int] | None, *, class_names: tuple[str, ...], origin: str
) -> RawData:
    images, keep = _read_image_files(files)
    bad = sorted(set(range(len(files))) - set(keep.tolist()))
    lab = torch.tensor(labels, dtype=torch.int64)[keep] if labels is not None else None
    return RawData(
        train=RawSplit(images, lab),
        test=None,
        class_names=class_names,
        skipped=len(bad),
        skipped_examples=[str(files[i]) for i in bad[:5]],
        origin=origin,
    )
