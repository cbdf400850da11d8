"""The project's foundation, imported by every other package and importing none of them.

* :mod:`common.persistence` — files on disk: atomic writes, checkpoints written whole,
  never overwriting a folder, validated safetensors / JSON reads, shipped weights.
* :mod:`common.cli` — command lines declared once by config dataclasses, validated before
  any work, errors in one line.
* :mod:`common.errors` — :class:`UserError`, what a user can fix from the command line.
"""

from common.errors import ConfigError, UserError

__all__ = ["ConfigError", "UserError"]
