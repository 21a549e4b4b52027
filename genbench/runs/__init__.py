"""Runs: from an experiment to finished run folders.

- :mod:`~genbench.runs.plan`: the one planner (experiment, sweep, ``--device``,
  ``--shard`` -> ``list[PlannedRun]``);
- :mod:`~genbench.runs.grid`: the skip, lock and failure policy around each run, one
  options object (``RunOptions``), the real-data row;
- :mod:`~genbench.runs.preflight`: what scoring will need, checked before any training;
- :mod:`~genbench.runs.steps`: the named steps of one run (prepare, train or reuse,
  sample, score, record);
- :mod:`~genbench.runs.folder`: the run folder, the only writer of run folders;
- :mod:`~genbench.runs.pretrained` and :mod:`~genbench.runs.samples`: weights trained
  elsewhere, and the fixed sample set.

The package imports nothing itself: genbench/train/ imports the run folder (through
``genbench.runs.folder``) while the steps import the training loop, so an ``__init__`` that
imported the steps would make that a cycle at import time.
"""
