"""Runs: from an experiment to finished run folders.

- :mod:`~genbench.runs.plan`: the one planner (experiment, sweep, ``--device``,
  ``--shard`` -> ``list[PlannedRun]``);
- :mod:`~genbench.runs.grid`: the skip, lock and failure policy around each run, one
  options object (``RunOptions``);
- :mod:`~genbench.runs.preflight`: what scoring will need, checked before any training;
- :mod:`~genbench.runs.steps`: the named steps of one run (prepare, train or reuse,
  sample, score, record);
- :mod:`~genbench.runs.real`: the real-data row, its scoring and its folder;
- :mod:`~genbench.runs.snapshots`: samples scored during training (the curves);
- :mod:`~genbench.runs.pretrained` and :mod:`~genbench.runs.samples`: weights trained
  elsewhere, and the fixed sample set;
- :mod:`~genbench.runs.trained`: ``genbench sample``'s grids from a finished run.

The run folder they write is :mod:`genbench.storage.folder`, a layer below.
"""
