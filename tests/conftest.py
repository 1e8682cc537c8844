"""Suite-wide hooks: the tests marked ``heavy`` (5 s or more each) start first, so that under
pytest-xdist (``make test``) no worker is left running one of them alone at the end; and each
process skips the interpreter's last garbage collections when the session is over."""

from __future__ import annotations

import gc

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable otherwise


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # At exit Python collects garbage over every object left: with torch and the whole suite
    # loaded that took 3 to 6 s per xdist worker, which the controller waits for. Nothing is
    # left to finalise by then (loader workers, writers and servers are closed by the tests).
    gc.freeze()
