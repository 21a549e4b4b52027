"""The dataset layer: one pipeline and one recorded split for every model.

- :mod:`~genbench.data.sources`: the datasets (digits, Fashion-MNIST, CelebA, UTKFace,
  image folders, ...) read into memory;
- :mod:`~genbench.data.transforms`: the one transform pipeline and the value ranges;
- :mod:`~genbench.data.sets`: :class:`ImageSet` and :class:`DataBundle`;
- :mod:`~genbench.data.load`: :func:`load_data`, the split and its record.
"""

from genbench.data.load import load_data
from genbench.data.sets import DataBundle, ImageSet
from genbench.data.sources import SOURCES
from genbench.data.transforms import to_model_range, to_uint8

__all__ = ["SOURCES", "DataBundle", "ImageSet", "load_data", "to_model_range", "to_uint8"]
