"""Uploads as fal's storage API has them (PROTOCOL.md §7): raw HTTP flows, limits, and the unmodified fal client.

fal_client hard-codes https://rest.fal.ai and https://v3.fal.media for uploads (§8); here they reach the relay
through a tiny CONNECT proxy (HTTPS_PROXY, which httpx honours), and the relay's development certificate covers
those names (--tls-extra-names).
"""
import datetime
import os
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from peers import FAL_STORAGE_HOSTS, ConnectProxy

from conftest import Relay, started_relay

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def relay():
    with started_relay(
        "media-relay-uploads-", ("--tls-extra-names", ",".join(FAL_STORAGE_HOSTS), "--body-timeout-seconds", "2")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def http(relay):
    with httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=60) as client:
        yield client


def key_headers(relay, **extra):
    return {"Authorization": f"Key {relay.key}", **extra}


def storage_token(http, relay):
    response = http.post(
        f"https://{relay.queue_host}/storage/auth/token?storage_type=fal-cdn-v3", json={}, headers=key_headers(relay)
    )
    assert response.status_code == 200, response.text
    return response.json()


def v3_upload(http, relay, data, content_type="image/png", token=None):
    token = token or storage_token(http, relay)["token"]
    return http.post(
        f"https://{relay.queue_host}/files/upload", content=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, "X-Fal-File-Name": "x.png"},
    )


def initiate(http, relay, name="photo.png", content_type="image/png"):
    response = http.post(
        f"https://{relay.queue_host}/storage/upload/initiate?storage_type=gcs",
        json={"file_name": name, "content_type": content_type}, headers=key_headers(relay),
    )
    assert response.status_code == 200, response.text
    return response.json()


def rss_kib(relay, field):
    with open(f"/proc/{relay.process.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def raw_request(port, head, body=b"", wait=5.0):
    """Sends a request by hand and returns whatever the server answers within `wait` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return received


# --- raw HTTP flows ---------------------------------------------------------------------------------------------


def test_initiate_put_then_the_file_url_serves_the_bytes(http, relay):
    data = os.urandom(300_000)
    grant = initiate(http, relay)
    assert grant["upload_url"].startswith(f"https://{relay.queue_host}/storage/upload/")
    assert grant["file_url"].endswith("/photo.png")
    assert http.get(grant["file_url"]).status_code == 404  # not uploaded yet
    put = http.put(grant["upload_url"], content=data, headers={"Content-Type": "image/png"})
    assert put.status_code == 200, put.text
    content_addressed = put.json()["access_url"]
    served = http.get(grant["file_url"])
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == "image/png"
    assert http.get(content_addressed).content == data
    assert served.headers["etag"] == http.get(content_addressed).headers["etag"]

    # The same bytes again, through either flow: the same content-addressed URL.
    second = initiate(http, relay, name="again.png")
    again = http.put(second["upload_url"], content=data, headers={"Content-Type": "image/png"})
    assert again.json()["access_url"] == content_addressed
    assert v3_upload(http, relay, data).json()["access_url"] == content_addressed
    # A retried PUT of the same bytes is fine; other bytes on a used URL are refused (400, never retried).
    assert http.put(second["upload_url"], content=data, headers={"Content-Type": "image/png"}).status_code == 200
    other = http.put(second["upload_url"], content=b"other bytes", headers={"Content-Type": "image/png"})
    assert other.status_code == 400
    assert other.json()["error_type"] == "upload_already_completed"
    assert http.get(second["file_url"]).content == data


def test_v3_token_and_upload(http, relay):
    token = storage_token(http, relay)
    assert token["token_type"] == "Bearer"
    expires = datetime.datetime.fromisoformat(token["expires_at"])
    assert expires.utcoffset() == datetime.timedelta(0)
    remaining = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 3500 < remaining <= 3600
    data = os.urandom(2 * MiB + 17)
    response = v3_upload(http, relay, data, "video/mp4", token=token["token"])
    assert response.status_code == 200, response.text
    access_url = response.json()["access_url"]
    assert access_url.startswith(f"https://{relay.queue_host}/files/") and access_url.endswith(".mp4")
    served = http.get(access_url)
    assert served.content == data
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert v3_upload(http, relay, data, "video/mp4").json()["access_url"] == access_url
    # An API key works in place of the storage token.
    with_key = http.post(f"https://{relay.queue_host}/files/upload", content=data, headers=key_headers(relay, **{"Content-Type": "video/mp4"}))
    assert with_key.json()["access_url"] == access_url


def test_bad_credentials_are_401_and_unknown_upload_urls_404(http, relay):
    base = f"https://{relay.queue_host}"
    assert http.post(f"{base}/files/upload", content=b"x").status_code == 401
    bad = http.post(f"{base}/files/upload", content=b"x", headers={"Authorization": "Bearer 00.00"})
    assert bad.status_code == 401 and bad.json()["error_type"] == "unauthorized"
    assert http.post(f"{base}/storage/auth/token", json={}).status_code == 401
    assert http.post(f"{base}/storage/upload/initiate", json={}).status_code == 401

    grant = initiate(http, relay)
    upload_id, token = grant["upload_url"].rsplit("/", 2)[-2:]
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
    response = http.put(f"{base}/storage/upload/{upload_id}/{tampered}", content=b"x")
    assert response.status_code == 401
    # A genuine token does not open another upload's URL.
    other_id = "0" * 32
    assert http.put(f"{base}/storage/upload/{other_id}/{token}", content=b"x").status_code == 401
    assert http.put(f"{base}/storage/upload/not-an-upload/{token}", content=b"x").status_code == 404
    assert http.get(f"{base}/files/uploads/{'ab' * 16}/x.png").status_code == 404


def test_over_the_limit_is_413_before_the_body_is_read(relay):
    answer = raw_request(
        relay.http_port,
        f"POST /files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Key {relay.key}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {100 * MiB + 1}\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error_type":"payload_too_large"' in answer


def test_a_100_mib_upload_streams_to_disk(http, relay):
    """At the limit: accepted, and the relay's memory grows by far less than the body (it is never buffered)."""
    before = rss_kib(relay, "VmHWM")
    chunk = os.urandom(MiB)
    total = 100 * MiB

    def body():
        for index in range(100):
            yield chunk[:-1] + bytes([index])

    response = httpx.post(
        f"http://127.0.0.1:{relay.http_port}/files/upload", content=body(), timeout=120,
        headers=key_headers(relay, **{"Content-Type": "application/octet-stream", "Content-Length": str(total)}),
    )
    assert response.status_code == 200, response.text
    peak = rss_kib(relay, "VmHWM")
    assert peak - before < 40 * 1024, f"peak RSS grew by {(peak - before) // 1024} MiB for a 100 MiB upload"
    served = http.get(response.json()["access_url"])
    assert len(served.content) == total
    assert served.content[MiB - 1] == 0 and served.content[100 * MiB - 1] == 99


def test_a_chunked_body_over_the_limit_is_cut_off(relay):
    """No Content-Length: the relay counts while streaming and answers 413 once the limit is passed."""
    before = rss_kib(relay, "VmHWM")
    head = (
        f"POST /files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Key {relay.key}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % MiB + os.urandom(MiB) + b"\r\n"
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", relay.http_port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for _ in range(200):
                sock.sendall(chunk)
                sent += 1
                if select.select([sock], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, socket.timeout):
            pass
    # Socket buffers on both sides take a few MiB more before the answer is seen.
    assert sent < 116, f"the relay read {sent} MiB of a body over its 100 MiB limit"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss_kib(relay, "VmHWM") - before < 40 * 1024
    assert httpx.get(f"http://127.0.0.1:{relay.http_port}/healthz").status_code == 200
    # The file goes on the thread pool after the connection closes: give it a bounded moment.
    deadline = time.time() + 5
    while os.listdir(os.path.join(relay.data_dir, "tmp")) and time.time() < deadline:
        time.sleep(0.05)
    assert not os.listdir(os.path.join(relay.data_dir, "tmp")), "the cut-off upload's file was removed"


def test_a_stalled_body_is_408(relay):
    answer = raw_request(
        relay.http_port,
        f"POST /files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Key {relay.key}\r\n"
        "Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n",
        body=b"only ten b",
        wait=6,
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    time.sleep(0.5)
    assert not os.listdir(os.path.join(relay.data_dir, "tmp"))


def test_upload_urls_and_tokens_expire():
    with tempfile.TemporaryDirectory(prefix="media-relay-uploads-expiry-") as data_dir:
        server = Relay(data_dir, extra_args=("--upload-token-seconds", "10"))
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
                token = storage_token(http, server)
                expires = datetime.datetime.fromisoformat(token["expires_at"])
                assert (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 10
                grant = initiate(http, server)
                assert v3_upload(http, server, b"fresh", token=token["token"]).status_code == 200
                time.sleep(11.5)
                assert v3_upload(http, server, b"stale", token=token["token"]).status_code == 401
                assert http.put(grant["upload_url"], content=b"late").status_code == 401
        finally:
            server.stop()


def test_file_urls_survive_a_restart():
    with tempfile.TemporaryDirectory(prefix="media-relay-uploads-restart-") as data_dir:
        data = os.urandom(50_000)
        server = Relay(data_dir)
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
                grant = initiate(http, server)
                assert http.put(grant["upload_url"], content=data, headers={"Content-Type": "image/png"}).status_code == 200
        finally:
            server.stop()
        path = grant["file_url"].split("/", 3)[3]
        server = Relay(data_dir)
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
                assert http.get(f"https://{server.queue_host}/{path}").content == data
        finally:
            server.stop()


def test_a_full_disk_is_507_and_leaves_nothing_behind():
    mount_point = tempfile.mkdtemp(prefix="media-relay-tiny-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mount_point], capture_output=True)
    if mounted.returncode != 0:
        os.rmdir(mount_point)
        pytest.skip("cannot mount a tmpfs here (needs root): the Swift BlobUploadTests cover ENOSPC")
    try:
        server = Relay(os.path.join(mount_point, "data"))
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
                response = v3_upload(http, server, os.urandom(8 * MiB))
                assert response.status_code == 507, response.text
                assert response.json()["error_type"] == "insufficient_storage"
                assert not os.listdir(os.path.join(server.data_dir, "tmp"))
                # Small uploads still work: nothing was left taking the space.
                assert v3_upload(http, server, os.urandom(100_000)).status_code == 200
                grant = initiate(http, server)
                put = http.put(grant["upload_url"], content=os.urandom(8 * MiB), headers={"Content-Type": "image/png"})
                assert put.status_code == 507
                assert http.get(grant["file_url"]).status_code == 404
        finally:
            server.stop()
    finally:
        subprocess.run(["umount", mount_point], check=False)
        os.rmdir(mount_point)


# --- the official client ----------------------------------------------------------------------------------------


def submit_and_wait(http, relay, image_url):
    body = {"prompt": "an uploaded fox", "image_url": image_url, "seed": 99, "num_inference_steps": 4, "image_size": "square"}
    response = http.post(f"https://{relay.queue_host}/fal-ai/flux/dev", json=body, headers=key_headers(relay))
    assert response.status_code == 200, response.text
    status_url = response.json()["status_url"]
    deadline = time.time() + 60
    while http.get(status_url, headers=key_headers(relay)).json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.1)
    return response.headers["x-relay-cache"]


@pytest.fixture
def fal_client_module():
    """fal_client for its SyncClient only. It reads its queue/run hosts at import, so when this test is the first to
    import it, the import is undone afterwards: conftest's `fal` fixture must import it with its own environment."""
    imported_before = "fal_client" in sys.modules
    import fal_client

    yield fal_client
    if not imported_before:
        for name in [name for name in sys.modules if name == "fal_client" or name.startswith("fal_client.")]:
            del sys.modules[name]


def test_the_official_client_uploads_and_inputs_are_keyed_by_digest(http, relay, monkeypatch, tmp_path, fal_client_module):
    fal_client = fal_client_module
    proxy = ConnectProxy(relay.https_port)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("SSL_CERT_FILE", relay.ca)
        client = fal_client.SyncClient(key=relay.key)
        picture = tmp_path / "fox.png"
        data = os.urandom(123_456)
        picture.write_bytes(data)

        url = client.upload_file(picture)  # fal_v3: token at rest.fal.ai, bytes to v3.fal.media
        assert set(proxy.tunnelled) == set(FAL_STORAGE_HOSTS), proxy.tunnelled
        assert url.startswith(f"https://{relay.queue_host}/files/") and url.endswith(".png")
        assert http.get(url).content == data
        assert client.upload_file(picture) == url  # same bytes, same URL

        # The fallback repository: initiate at rest.fal.ai, then PUT to the signed URL.
        file_url = client.upload(data, "image/png", "fox.png", repository="fal")
        assert "/files/uploads/" in file_url
        assert http.get(file_url).content == data
    finally:
        proxy.close()

    # One job for the bytes, however their URL is spelled: v3 URL, upload alias, other scheme and host.
    assert submit_and_wait(http, relay, url) == "miss"
    assert submit_and_wait(http, relay, file_url) == "hit"
    plain = url.replace(f"https://{relay.queue_host}", f"http://localhost:{relay.http_port}")
    assert submit_and_wait(http, relay, plain) == "hit"
    other = os.urandom(1000)
    other_url = v3_upload(http, relay, other).json()["access_url"]
    assert submit_and_wait(http, relay, other_url) == "miss"
