"""Suite-wide test order: the tests marked ``heavy`` (5 s or more each) start first, so that under
pytest-xdist (``make test``) no worker is left running one of them alone at the end."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable otherwise
