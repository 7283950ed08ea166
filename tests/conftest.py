"""Shared fixtures. Configs are built in code (tests/helpers.py), so tests do not depend on
shipped files."""

from __future__ import annotations

import pytest

from model.config import build_config
from tests.helpers import small_config


@pytest.fixture
def small_cfg():
    return build_config(small_config())
