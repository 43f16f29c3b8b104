"""Shared fixtures for the end-to-end tests: the built binary, scratch configs, free ports."""
import os
import pathlib
import socket
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MOONGATE_BIN", str(ROOT / ".build" / "debug" / "moongate"))


def run_moongate(*args, cwd=ROOT, timeout=60):
    return subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def root():
    return ROOT
