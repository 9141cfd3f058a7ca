"""Test-suite wide settings: the suite runs offline.

Every socket connection outside the loopback range is refused while a test
runs, so no test (and no default code path it exercises) reaches the
network. Tests marked `network` are skipped unless KERAS_ERSM_ALLOW_NETWORK=1.
"""

import os
import socket

import pytest

_ALLOW_NETWORK = os.environ.get("KERAS_ERSM_ALLOW_NETWORK") == "1"
_real_connect = socket.socket.connect


def _is_local(address):
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in ("localhost", "::1") or host.startswith("127.")
    return True  # Unix sockets.


def _guarded_connect(self, address):
    if not _is_local(address):
        raise OSError(f"Network access is blocked during tests: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch, request):
    if request.node.get_closest_marker("network"):
        if not _ALLOW_NETWORK:
            pytest.skip("needs the network (set KERAS_ERSM_ALLOW_NETWORK=1)")
        return
    if not _ALLOW_NETWORK:
        monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
