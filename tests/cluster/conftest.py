"""Helpers for the cluster tests: load the scripts under cluster/local/ (not a package) as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"


def load_cluster_script(name: str):
    """Import cluster/local/<name>.py once and return the module."""
    key = f"longctx_cluster_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, CLUSTER / "local" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="session")
def headctl():
    return load_cluster_script("headctl")


@pytest.fixture(scope="session")
def submit_mod():
    return load_cluster_script("submit")
