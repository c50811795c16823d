"""Fixtures shared by the sweep tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_project import write_tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sweep project (generated and packed data, params.yaml), one per test module;
    tracking points at a database nothing opens."""
    root = tmp_path_factory.mktemp("sweep-project")
    write_tiny_project(root, "sqlite:///unused.db")
    return root
