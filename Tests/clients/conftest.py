"""Starts a real media-relay on free loopback ports and points the official fal client at it (PROTOCOL.md §10)."""
import contextlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("MEDIA_RELAY_BIN", os.path.join(ROOT, ".build", "debug", "media-relay"))


class Relay:
    """A running relay process: its ports, data directory, CA and an API key."""

    def __init__(self, data_dir, extra_args=()):
        self.data_dir = data_dir
        self.output = []
        created = subprocess.run(
            [BINARY, "keys", "create", "--tier", "pro", "--data-dir", data_dir],
            check=True, capture_output=True, text=True, timeout=60,
        )
        self.key = created.stdout.strip().splitlines()[-1]
        admin = subprocess.run(
            [BINARY, "keys", "create", "--tier", "admin", "--data-dir", data_dir],
            check=True, capture_output=True, text=True, timeout=60,
        )
        self.admin_key = admin.stdout.strip().splitlines()[-1]
        args = [
            BINARY, "serve",
            "--data-dir", data_dir,
            "--catalog", os.path.join(ROOT, "Config", "models.json"),
            "--ui-dir", os.path.join(ROOT, "Public"),
            "--http", "127.0.0.1:0",
            "--https", "127.0.0.1:0",
            "--synthetic-time-scale", "0.1",
            "--log-level", "warning",
            *extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        self.https_port = self.http_port = None

        def pump():
            for line in self.process.stdout:
                self.output.append(line)
                match = re.match(r"READY https=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)", line)
                if match:
                    self.https_port, self.http_port = int(match.group(1)), int(match.group(2))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise RuntimeError("relay did not start:\n" + "".join(self.output))
        self.ca = os.path.join(data_dir, "tls", "ca.pem")

    @property
    def queue_host(self):
        return f"127.0.0.1:{self.https_port}"

    @property
    def run_host(self):
        return f"localhost:{self.https_port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def started_relay(prefix, extra_args=()):
    """A relay of a test module's own, in a data directory of its own; it must exit cleanly on SIGTERM."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = Relay(data_dir, extra_args=extra_args)
        try:
            yield server
        finally:
            server.stop()
            code = server.process.returncode
            assert code == 0, f"relay exited with {code} on SIGTERM:\n" + "".join(server.output[-40:])


@pytest.fixture(scope="session")
def relay():
    with started_relay("media-relay-test-") as server:
        yield server


@pytest.fixture(scope="session")
def fal(relay):
    """The official fal client, unmodified, configured by environment before its import (it reads hosts then)."""
    os.environ["FAL_KEY"] = relay.key
    os.environ["FAL_RUN_HOST"] = relay.run_host
    os.environ["FAL_QUEUE_RUN_HOST"] = relay.queue_host
    os.environ["SSL_CERT_FILE"] = relay.ca
    os.environ.pop("FAL_KEY_ID", None)
    os.environ.pop("FAL_KEY_SECRET", None)
    if "fal_client" in sys.modules:
        return importlib.reload(sys.modules["fal_client"])
    return importlib.import_module("fal_client")


@pytest.fixture(scope="session")
def http(relay):
    """An httpx client that trusts the relay's development CA."""
    import ssl

    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=30) as client:
        yield client
