"""The genbench command line: thin commands over library functions.

The commands live in :mod:`~genbench.cli.run`, :mod:`~genbench.cli.catalog`,
:mod:`~genbench.cli.results` and :mod:`~genbench.cli.measure`; they are registered in
:mod:`~genbench.cli.main`, in the order ``genbench --help`` lists them.
"""

from genbench.cli.app import app
from genbench.cli.main import main

__all__ = ["app", "main"]
