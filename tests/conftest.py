"""Fixtures shared by every test folder.

``float64``: run a test with float64 as torch's default dtype (equivariance checks compare
at round-off, 1e-15, not at float32's 1e-7); restored afterwards. A module opts in with
``pytestmark = pytest.mark.usefixtures("float64")``.

``seeded``: torch's global generator seeded with 0, for tests that build models with
``torch.nn``'s random initialisation; returns a ``torch.Generator`` seeded the same, for
draws that should not depend on how many the models took.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


@pytest.fixture
def seeded() -> torch.Generator:
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
