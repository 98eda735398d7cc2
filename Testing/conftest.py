"""Suite-wide settings: tests never touch the user's real cache or job folders."""

import os
import shutil

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("transferseg-home")
    monkeypatch.setenv("TRANSFERSEG_HOME", str(home))
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(home / "cache"))
    monkeypatch.delenv("TRANSFERSEG_OFFLINE", raising=False)
    yield
    shutil.rmtree(home, ignore_errors=True)  # job folders and downloads of this test: not kept past it


def pytest_configure(config):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
