"""Fixtures shared by several test files."""

import pytest

from labkit import MaskGit


@pytest.fixture
def nan_loss_at(monkeypatch):
    """``calls = nan_loss_at(k)``: from now on ``MaskGit.loss`` returns NaN at its k-th call
    (counting from 1) and the true loss otherwise; ``calls["n"]`` counts the calls."""
    def install(bad_call: int) -> dict:
        calls = {"n": 0}
        original = MaskGit.loss

        def loss_turning_nan(self, logits, z, mask, *args, **kwargs):
            calls["n"] += 1
            value = original(self, logits, z, mask, *args, **kwargs)
            return value * float("nan") if calls["n"] == bad_call else value

        monkeypatch.setattr(MaskGit, "loss", loss_turning_nan)
        return calls
    return install
