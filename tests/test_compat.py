"""The private Lightning / PyTorch / Hydra / TensorBoard APIs that capsgan.compat lists are
still there on the installed versions: run this before moving an upper version pin."""

from __future__ import annotations

import pytest

from capsgan.compat import PRIVATE_APIS


@pytest.mark.parametrize("api", PRIVATE_APIS, ids=lambda a: a.name[:60])
def test_private_api_is_still_there(api) -> None:
    """Each private Lightning / PyTorch / Hydra API in capsgan.compat exists on the
    installed versions (the check to run before moving an upper pin)."""
    assert api.probe(), f"{api.name} changed: {api.breaks} (used in {api.used_in})"
