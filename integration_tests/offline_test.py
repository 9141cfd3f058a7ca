"""The suite runs offline, and keras_ersm's default code paths stay offline.

`conftest.py` refuses every non-loopback `socket.connect` while a test runs.
These tests prove the guard works, and that importing keras_ersm, building,
calling, fitting, saving and loading an `EnergyMask` model opens no
connection and resolves no host name, in a fresh process where nothing was
imported before the recorder was installed.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_ersm

# Installed before anything else is imported; records (and refuses) every
# non-loopback connection and every host name lookup.
_RECORDER = r"""
import json, os, socket, sys, tempfile

attempts = []
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo

def _local(address):
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in ("localhost", "::1", "") or host.startswith("127.")
    return True

def connect(self, address):
    if not _local(address):
        attempts.append(["connect", repr(address)])
        raise OSError("blocked")
    return _connect(self, address)

def connect_ex(self, address):
    if not _local(address):
        attempts.append(["connect_ex", repr(address)])
        return 111
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    if not _local((host,)):
        attempts.append(["getaddrinfo", repr(host)])
        raise socket.gaierror("blocked")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo

import numpy as np
import keras
import keras_ersm

model = keras.Sequential([
    keras.Input((8, 8, 3)),
    keras.layers.Conv2D(4, 3, padding="same"),
    keras_ersm.EnergyMask(patch_size=2),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(2),
])
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.rand(4, 8, 8, 3).astype("float32")
model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
path = os.path.join(tempfile.mkdtemp(), "m.keras")
model.save(path)
restored = keras.saving.load_model(path, safe_mode=True)
restored(x)
library = list(attempts)
# Control: the recorder does see a lookup and a connection.
for probe in (lambda: socket.getaddrinfo("example.com", 443),
              lambda: socket.socket().connect(("8.8.8.8", 53))):
    try:
        probe()
    except OSError:
        pass
print(json.dumps({"library": library, "control": attempts[len(library):]}))
"""


def test_guard_refuses_a_public_address():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        with pytest.raises(OSError, match="Network access is blocked"):
            sock.connect(("8.8.8.8", 53))
    with pytest.raises(OSError, match="Network access is blocked"):
        socket.create_connection(("1.1.1.1", 443), timeout=1.0)


def test_guard_allows_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1.0):
            pass


def test_layer_in_this_process_opens_no_connection(monkeypatch):
    attempts = []
    guarded = socket.socket.connect

    def record(self, address):
        attempts.append(address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", record)
    layer = keras_ersm.EnergyMask(patch_size=2)
    x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    layer(x)
    layer.energy_terms(x)
    assert attempts == []


@pytest.mark.slow
def test_import_build_fit_save_load_in_a_fresh_process_stay_offline():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _RECORDER],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["library"] == []
    assert [kind for kind, _ in result["control"]] == ["getaddrinfo", "connect"]


def test_marker_network_is_registered(pytestconfig):
    markers = pytestconfig.getini("markers")
    assert any(m.startswith("network:") for m in markers)
    assert keras.backend.backend() in ("jax", "tensorflow", "torch")
