"""``tests/_settings.py``: the shared fixtures are required under CI."""

from __future__ import annotations

import pytest


def test_a_missing_parity_fixture_fails_under_ci(monkeypatch, tmp_path):
    from tests._settings import shared_fixture

    monkeypatch.setenv("MTF_SHARED_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true"):
        shared_fixture("sg2a-tiny.pt")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        shared_fixture("sg2a-tiny.pt")
