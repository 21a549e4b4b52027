"""The fixed sample set's generation, where genbench/train/snapshots.py still imports it
from (issue 21 is changing that file). It lives in :mod:`genbench.runs.samples`; new code
imports it from there."""

from genbench.runs.samples import assemble, generate, plan_labels

__all__ = ["assemble", "generate", "plan_labels"]
