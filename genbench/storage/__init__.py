"""Storage: what a run leaves on disk, below everything that computes it.

- :mod:`~genbench.storage.folder`: the run folder, its file names (``CHECKPOINT_DIR``
  included) and the only writer of run folders (sample sets, units' files, metrics.json);
- :mod:`~genbench.storage.checkpoints` and :mod:`~genbench.storage.weights`: training
  checkpoints and weight files (torch or safetensors), loaded with ``weights_only=True``;
- :mod:`~genbench.storage.images`: the one grid tiler and the one image-file reader.
"""
