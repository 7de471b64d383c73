"""What every ``llmbench`` command shares: :class:`UsageError` (a mistake told as one line),
the argparse parser that raises it, and the config and grid files as the commands read them.

``REPO_ROOT`` here is the repository whose ``config/`` every command reads (read at call
time: a test points it at another tree). May import ``llmbench`` and ``llmbench.grid``.
"""

from __future__ import annotations

import argparse

import yaml

from llmbench import REPO_ROOT


class UsageError(Exception):
    """A mistake in the command line or in what it names (a size, a grid, a folder): printed
    as one line ``llmbench: error: ...`` with exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a UsageError (one line) instead of usage text and exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see: {self.prog} --help)")


def repo_config() -> dict:
    """config/config.yaml as written (the defaults every command starts from)."""
    return yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())


def grid_document(grid: str) -> dict:
    """The validated grid document; raises UsageError naming what is wrong with it."""
    from llmbench.grid.spec import load_grid

    try:
        return load_grid(grid, REPO_ROOT / "config", repo_config()["models"])
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
