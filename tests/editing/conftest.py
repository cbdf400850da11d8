"""Helpers for the command-line tests of ``editing``.

``refused(main, argv, *words)``: runs a ``python -m editing.X`` entry point, asserts it ends
with exit status 2 and exactly one line on stderr (no traceback) that contains every word
(typically the ``--flag``), and returns that line.

``snapshot(folder)``: ``{relative path: bytes}`` of every file under ``folder`` (``{}`` if it
does not exist), to check that a refused command left a folder byte-identical.

``same_state(a, b)``: whether two modules hold exactly the same state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn


@pytest.fixture
def refused(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    def check(main: Callable, argv: list[str], *words: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.endswith("\n") and len(err.splitlines()) == 1, err
        assert "Traceback" not in err
        for word in words:
            assert word in err, (word, err)
        return err

    return check


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
