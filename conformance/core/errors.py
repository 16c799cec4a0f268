"""The failures an implementation causes, and where they are shown from.

A leaf of the package, so that the sharded engines' process pool raises the same failures as
guarded calls (core/calls.py) without importing the suite's configuration.
"""

from __future__ import annotations

import os


class ImplementationError(AssertionError):
    """The implementation raised, hung or misbehaved: a failure of the test, with its cause."""


class TimedOut(ImplementationError):
    """The implementation did not return within the limit."""



def _short_path(path: str) -> str:
    """A source path as a user finds it: below site-packages, or relative to the working
    directory, else as it is."""
    norm = path.replace(os.sep, "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in norm:
            return norm.rsplit(marker, 1)[1]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
