"""The errors a user can fix from the command line (a CLI reports them in one line)."""

from __future__ import annotations

__all__ = ["ConfigError", "UserError"]


class UserError(ValueError):
    """An error the user can fix: a bad option, a folder that holds someone's files, a
    malformed checkpoint, an unknown name. :func:`common.cli.run` reports it in one line."""


class ConfigError(UserError):
    """An option value the code does not accept; the message names the ``--flag``."""
