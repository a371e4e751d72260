"""Edge protection on the wire: deadlines (slowloris, idle, stalled bodies), head and URL limits, connection caps,
fal-shaped protocol errors, certificate reload on SIGHUP, and the admin API."""
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import httpx
import pytest

from conftest import Relay


@pytest.fixture(scope="module")
def strict():
    """A relay with short deadlines and small caps, so every limit is reachable in a test."""
    with tempfile.TemporaryDirectory(prefix="media-relay-limits-") as data_dir:
        server = Relay(data_dir, extra_args=[
            "--header-timeout-seconds", "1",
            "--idle-timeout-seconds", "1.5",
            "--body-timeout-seconds", "1",
            "--max-connections-per-ip", "6",
            "--max-header-bytes", "8192",
            "--max-url-bytes", "2048",
        ])
        try:
            yield server
        finally:
            server.stop()


def read_response(sock, limit=10.0):
    """Reads until the peer closes (or `limit` seconds); returns (bytes, seconds until close or None)."""
    sock.settimeout(limit)
    start = time.monotonic()
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, time.monotonic() - start
            data += chunk
    except socket.timeout:
        return data, None
    except ConnectionResetError:
        return data, time.monotonic() - start


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    return status, headers, json.loads(body) if body else None


def test_slowloris_head_is_cut_at_the_header_timeout(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for i in range(20):  # one header line every 200 ms: never a whole head
                time.sleep(0.2)
                sock.sendall(f"X-Drip-{i}: a\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = read_response(sock)
        elapsed = time.monotonic() - start
    status, headers, body = parse(raw)
    assert status == 408
    assert body["detail"].startswith("The request head was not received")
    assert headers["connection"] == "close"
    assert 0.9 < elapsed < 3.5


def test_a_connection_that_sends_nothing_is_closed(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        raw, closed_after = read_response(sock, limit=5)
    assert closed_after is not None and closed_after < 3
    assert parse(raw)[0] == 408


def test_tls_handshake_must_finish_within_the_header_timeout(strict):
    with socket.create_connection(("127.0.0.1", strict.https_port)) as sock:
        _, closed_after = read_response(sock, limit=5)
    assert closed_after is not None and closed_after < 3


def test_idle_keep_alive_connection_is_closed_quietly(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        raw, closed_after = read_response(sock, limit=5)
    assert raw == b""  # no response to a request never made
    assert closed_after is not None and 1.0 < closed_after < 3.5


def test_a_busy_keep_alive_connection_is_not_closed(strict):
    with httpx.Client(base_url=f"http://127.0.0.1:{strict.http_port}") as client:
        for _ in range(4):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.8)  # under the idle timeout each time, 3.2 s in all


def test_stalled_body_is_408(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        sock.sendall(
            b"POST /fal-ai/flux/dev HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Key " + strict.key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":"
        )
        raw, closed_after = read_response(sock)
    status, _, body = parse(raw)
    assert status == 408
    assert "body stalled" in body["detail"]
    assert closed_after is not None and closed_after < 4


def test_oversized_head_is_431(strict):
    with httpx.Client(base_url=f"http://127.0.0.1:{strict.http_port}") as client:
        response = client.get("/healthz", headers={"X-Big": "a" * 9000})
    assert response.status_code == 431
    assert response.json()["detail"] == "The request headers exceed 8192 bytes"
    assert response.headers["x-fal-error-type"] == "request_header_fields_too_large"


def test_head_beyond_the_parser_limit_is_431_too(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Fill: " + b"b" * 200_000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = read_response(sock)
    assert parse(raw)[0] == 431


def test_long_url_is_414(strict):
    with httpx.Client(base_url=f"http://127.0.0.1:{strict.http_port}") as client:
        response = client.get("/healthz?x=" + "a" * 3000)
    assert response.status_code == 414
    assert response.json()["detail"] == "The request URL exceeds 2048 bytes"


def test_malformed_request_gets_a_fal_shaped_400(strict):
    with socket.create_connection(("127.0.0.1", strict.http_port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: nope\r\n\r\n")
        raw, _ = read_response(sock)
    status, headers, body = parse(raw)
    assert status == 400
    assert headers["x-fal-error-type"] == "bad_request"
    assert "Malformed HTTP request" in body["detail"]


def test_connections_per_address_are_capped_with_a_clear_503(strict):
    held = []
    try:
        # Connections that have sent a request and wait: each counts until it closes.
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", strict.http_port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(sock)
        with socket.create_connection(("127.0.0.1", strict.http_port)) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            raw, closed_after = read_response(extra)
        status, headers, body = parse(raw)
        assert status == 503
        assert headers["x-fal-error-type"] == "too_many_connections"
        assert "Too many connections from your address" in body["detail"]
        assert closed_after is not None
        # A WebSocket upgrade over the cap is refused the same way, never upgraded.
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{strict.http_port}/ws", additional_headers={"Authorization": f"Key {strict.key}"},
                    open_timeout=10)
        assert refused.value.response.status_code == 503
        # And over HTTP/2: the fast lane that answers health from the HEADERS frame is not there to skip the 503.
        import ssl
        with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=strict.ca), timeout=10) as h2:
            over = h2.get(f"https://127.0.0.1:{strict.https_port}/healthz")
        assert over.http_version == "HTTP/2" and over.status_code == 503, (over.http_version, over.status_code)
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the address may connect again.
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(f"http://127.0.0.1:{strict.http_port}/healthz")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200
    stats = httpx.get(f"http://127.0.0.1:{strict.http_port}/relay/stats").json()
    assert stats["connections"]["refused"] >= 1


# ---- Certificate reload -------------------------------------------------------------------------------------------

def make_certificate(directory, name, ca_key, ca_cert):
    key, csr, cert, ext = (os.path.join(directory, f"{name}.{suffix}") for suffix in ("key", "csr", "pem", "ext"))
    with open(ext, "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                    "-days", "2", "-out", cert, "-extfile", ext], check=True, capture_output=True)
    return cert, key


def peer_common_name(port, ca):
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return subject["commonName"]


def test_sighup_reloads_the_certificate_without_dropping_connections():
    with tempfile.TemporaryDirectory(prefix="media-relay-reload-") as directory:
        ca_key, ca_cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", ca_key, "-out", ca_cert, "-days", "2", "-subj", "/CN=reload test CA"],
                       check=True, capture_output=True)
        first_cert, first_key = make_certificate(directory, "first", ca_key, ca_cert)
        second_cert, second_key = make_certificate(directory, "second", ca_key, ca_cert)
        live_cert, live_key = os.path.join(directory, "live.pem"), os.path.join(directory, "live.key")
        for source, target in ((first_cert, live_cert), (first_key, live_key)):
            with open(source, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
        data = os.path.join(directory, "data")
        os.mkdir(data)
        server = Relay(data, extra_args=["--tls-cert", live_cert, "--tls-key", live_key])
        try:
            assert peer_common_name(server.https_port, ca_cert) == "first"
            context = ssl.create_default_context(cafile=ca_cert)
            with httpx.Client(verify=context, base_url=f"https://127.0.0.1:{server.https_port}") as open_client:
                assert open_client.get("/healthz").status_code == 200
                for source, target in ((second_cert, live_cert), (second_key, live_key)):
                    with open(source, "rb") as src, open(target, "wb") as dst:
                        dst.write(src.read())
                server.process.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while peer_common_name(server.https_port, ca_cert) != "second":
                    assert time.monotonic() < deadline, "the new certificate was not picked up"
                    time.sleep(0.1)
                # The connection opened before the reload is still served.
                assert open_client.get("/healthz").status_code == 200
            # A broken certificate file keeps the current one.
            with open(live_cert, "w") as handle:
                handle.write("not a certificate")
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert peer_common_name(server.https_port, ca_cert) == "second"
            assert server.process.poll() is None
        finally:
            server.stop()
        assert server.process.returncode == 0


def test_tls_offers_only_modern_suites(relay):
    # CBC and non-forward-secret suites that BoringSSL would accept by default: all must be refused.
    offered = 0
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES128-SHA", "AES128-SHA",
                   "AES128-GCM-SHA256", "AES256-GCM-SHA384"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.set_ciphers("@SECLEVEL=0:" + cipher)
        except ssl.SSLError:
            continue  # this Python's OpenSSL cannot offer it at all
        offered += 1
        with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert offered >= 3
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(relay.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0].startswith("ECDHE-")


# ---- Admin API ------------------------------------------------------------------------------------------------------

def test_admin_api_needs_an_admin_key(relay, http):
    base = f"https://{relay.queue_host}"
    assert http.get(f"{base}/admin/stats").status_code == 401
    response = http.get(f"{base}/admin/stats", headers={"Authorization": f"Key {relay.key}"})
    assert response.status_code == 403
    assert response.json()["detail"] == "The admin API needs an admin key"


def wait_completed(http, base, request_id, headers, seconds=30):
    deadline = time.monotonic() + seconds
    while http.get(f"{base}/fal-ai/flux/requests/{request_id}/status", headers=headers).json()["status"] != "COMPLETED":
        assert time.monotonic() < deadline, f"request {request_id} did not complete"
        time.sleep(0.1)


def submit_and_wait(http, base, body, headers):
    """Submits to fal-ai/flux/schnell, waits for the end; returns (RequestKey hex, request id)."""
    submitted = http.post(f"{base}/fal-ai/flux/schnell", json=body, headers=headers)
    key = submitted.headers["cache-status"].split('key="')[1].split('"')[0]
    request_id = submitted.json()["request_id"]
    wait_completed(http, base, request_id, headers)
    return key, request_id


def test_admin_purge_by_key_model_and_digest(relay, http):
    base = f"https://{relay.queue_host}"
    admin = {"Authorization": f"Key {relay.admin_key}"}
    user = {"Authorization": f"Key {relay.key}"}
    body = {"prompt": "purge me", "seed": 4242, "num_inference_steps": 2}
    key, request_id = submit_and_wait(http, base, body, user)
    result = http.get(f"{base}/fal-ai/flux/requests/{request_id}", headers=user).json()
    assert http.post(f"{base}/fal-ai/flux/schnell", json=body, headers=user).headers["x-relay-cache"] == "hit"

    stats = http.get(f"{base}/admin/stats", headers=admin).json()
    assert stats["cache"]["results"] >= 1
    assert stats["submissions"]["hit"] >= 1

    purged = http.post(f"{base}/admin/purge", json={"key": key}, headers=admin)
    assert purged.status_code == 200 and purged.json() == {"purged": {"results": 1}}
    again = http.post(f"{base}/fal-ai/flux/schnell", json=body, headers=user)
    assert again.headers["x-relay-cache"] == "miss"
    wait_completed(http, base, again.json()["request_id"], user)

    # By model: every result of the model goes.
    purged = http.post(f"{base}/admin/purge", json={"model": "fal-ai/flux/schnell"}, headers=admin).json()
    assert purged["purged"]["results"] >= 1
    assert http.post(f"{base}/fal-ai/flux/schnell", json=body, headers=user).headers["x-relay-cache"] != "hit"

    # By digest: the file itself is gone.
    url = result["images"][0]["url"]
    digest = url.rsplit("/", 1)[1].split(".")[0]
    path = "/files/" + url.rsplit("/", 1)[1]
    purged = http.post(f"{base}/admin/purge", json={"digest": digest}, headers=admin).json()
    assert purged["purged"]["blobs"] == 1
    assert http.get(f"{base}{path}").status_code == 404

    for bad in ({}, {"key": "xyz"}, {"model": "a", "digest": "b"}, {"key": 5}):
        response = http.post(f"{base}/admin/purge", json=bad, headers=admin)
        assert response.status_code == 422, bad
    assert http.post(f"{base}/admin/purge", content=b"{nope", headers=admin).status_code == 400


def test_admin_drain_takes_the_relay_out_of_rotation():
    with tempfile.TemporaryDirectory(prefix="media-relay-drain-") as data_dir:
        server = Relay(data_dir)
        try:
            base = f"http://127.0.0.1:{server.http_port}"
            assert httpx.get(f"{base}/readyz").status_code == 200
            response = httpx.post(f"{base}/admin/drain", headers={"Authorization": f"Key {server.admin_key}"})
            assert response.status_code == 202
            assert httpx.get(f"{base}/readyz").status_code == 503
            assert httpx.get(f"{base}/healthz").status_code == 200  # still serving what comes
            response = httpx.post(f"{base}/admin/drain", json={"shutdown": True}, headers={"Authorization": f"Key {server.admin_key}"})
            assert response.status_code == 202
            server.process.wait(20)
            assert server.process.returncode == 0
        finally:
            server.stop()


# ---- media-relay cache stats|purge ---------------------------------------------------------------------------------

def test_cache_command_line_reads_stats_and_purges(relay, http):
    from conftest import BINARY

    base = f"https://{relay.queue_host}"
    user = {"Authorization": f"Key {relay.key}"}
    body = {"prompt": "purged from the command line", "seed": 99, "num_inference_steps": 2}
    key, request_id = submit_and_wait(http, base, body, user)
    common = ["--host", base, "--ca", relay.ca]
    env = {**os.environ, "RELAY_ADMIN_KEY": relay.admin_key}
    env.pop("FAL_KEY", None)
    stats = subprocess.run([BINARY, "cache", "stats", *common], capture_output=True, text=True, env=env, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert any(line.startswith("results cached") and int(line.split()[-1]) >= 1 for line in stats.stdout.splitlines())
    raw = subprocess.run([BINARY, "cache", "stats", "--json", *common], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(raw.stdout)["cache"]["results"] >= 1

    purged = subprocess.run([BINARY, "cache", "purge", "--request-key", key, *common],
                            capture_output=True, text=True, env=env, timeout=60)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "results=1"
    assert http.post(f"{base}/fal-ai/flux/schnell", json=body, headers=user).headers["x-relay-cache"] == "miss"

    # A non-admin key is refused with the relay's reason; bad arguments never reach the network.
    refused = subprocess.run([BINARY, "cache", "stats", *common, "--admin-key", relay.key],
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 1 and "403" in refused.stderr and "admin key" in refused.stderr
    both = subprocess.run([BINARY, "cache", "purge", "--model", "a/b", "--digest", "00", *common],
                          capture_output=True, text=True, env=env, timeout=60)
    assert both.returncode != 0 and "exactly one" in both.stderr
    bad = subprocess.run([BINARY, "cache", "purge", "--request-key", "xyz", *common],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "422" in bad.stderr


def test_a_sighup_right_after_ready_does_not_end_the_relay():
    """SIGHUP reloads the certificate; the service that traps it starts after READY is printed, and until then the
    signal's default action ended the process (a deployment tool that sends SIGHUP once the relay says it is ready)."""
    with tempfile.TemporaryDirectory(prefix="media-relay-early-hup-") as data:
        server = Relay(data)
        try:
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert server.process.poll() is None, "".join(server.output[-20:])
            assert httpx.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=10).status_code == 200
        finally:
            server.stop()
        assert server.process.returncode == 0
