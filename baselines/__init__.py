"""genbench's built-in generators, one readable file per model.

The files live in the repository's ``baselines/`` folder and install as the
``genbench_baselines`` package (a name no other project uses); each registers
through the ``genbench.generators`` entry-point group like any plugin.
"""
