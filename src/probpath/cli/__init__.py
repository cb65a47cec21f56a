"""The ``probpath`` command line: ``train``, ``sample``, ``eval``, ``plot`` and ``demo``.

Each command is one module of this package holding its parser and its body
(:mod:`.train`, :mod:`.sample`, :mod:`.evaluate`, :mod:`.plot`, :mod:`.demo`); the flag
groups several commands share live in :mod:`._common`. A command parses its flags, calls
the library (:func:`probpath.train.fit`, :func:`probpath.train.load_run`,
:func:`probpath.train.evaluate_run`, ...) and prints. User mistakes end with one line
``probpath: error: ...`` and a non-zero exit code.

Example:
    >>> main(["--version"])  # doctest: +ELLIPSIS
    probpath 0...
    0
"""

from ._main import build_parser, main
from .train import merge_config

__all__ = ["build_parser", "main", "merge_config"]
