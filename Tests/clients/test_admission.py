"""Admission is one step in front of every route, whatever the transport: credentials (a key, or a fal_jwt_token where
a client cannot set headers) and budgets apply the same over HTTP, /ws and realtime. Also RFC 9112's Host rule."""
import json
import socket
import ssl

import httpx
import msgpack
import pytest
from websockets.sync.client import connect

from conftest import started_relay


@pytest.fixture(scope="module")
def own_relay():
    """A relay of this module's own: the tests spend the anonymous submissions budget of 127.0.0.1."""
    with started_relay("media-relay-admission-") as server:
        yield server


def tls(relay):
    return ssl.create_default_context(cafile=relay.ca)


def test_websocket_submissions_draw_from_the_submissions_budget(own_relay):
    """An anonymous caller gets 5 submissions at once (a quarter of 20 a minute); over /ws as over HTTP."""
    answers = []
    with connect(f"ws://127.0.0.1:{own_relay.http_port}/ws") as ws:
        for i in range(25):
            ws.send(json.dumps({"type": "submit", "model": "fal-ai/flux/schnell",
                                "input": {"prompt": f"budget over a socket {i}", "image_size": "square", "seed": i}}))
        while len(answers) < 25:
            message = json.loads(ws.recv(timeout=30))
            if message["type"] in ("submitted", "error"):
                answers.append(message)
    submitted = [a for a in answers if a["type"] == "submitted"]
    refused = [a for a in answers if a["type"] == "error"]
    assert 5 <= len(submitted) <= 7, answers
    assert refused and all(a["status"] == 429 and "Rate limit exceeded" in a["detail"] for a in refused), refused
    # The same budget: HTTP is refused too now.
    response = httpx.post(f"http://127.0.0.1:{own_relay.http_port}/fal-ai/flux/schnell",
                          json={"prompt": "after the socket", "image_size": "square", "seed": 99})
    assert response.status_code == 429 and response.headers["x-fal-error-type"] == "rate_limited"


def test_realtime_messages_draw_from_the_submissions_budget(own_relay):
    """Each realtime message starts work: it is charged like a submission. An anonymous caller is refused message by
    message with fal's x-fal-error once the budget is spent, and the socket stays open."""
    url = f"ws://localhost:{own_relay.http_port}/fal-ai/fast-lcm-diffusion/realtime"
    outcomes = []
    with connect(url) as ws:
        for i in range(12):
            ws.send(msgpack.packb({"prompt": f"realtime budget {i}", "seed": i, "request_id": f"r{i}"}, use_bin_type=True))
        for _ in range(12):
            message = ws.recv(timeout=30)
            outcomes.append(json.loads(message) if isinstance(message, str) else msgpack.unpackb(message, raw=False))
    refused = [o for o in outcomes if o.get("type") == "x-fal-error"]
    assert refused and all(o["error"] == "rate_limited" and "Rate limit exceeded" in o["reason"] for o in refused)
    assert len(refused) >= 5, outcomes
    # A key has its own budget: the same message with a key is served.
    with connect(url, additional_headers={"Authorization": f"Key {own_relay.key}"}) as ws:
        ws.send(msgpack.packb({"prompt": "realtime with a key", "seed": 2, "request_id": "keyed"}, use_bin_type=True))
        result = msgpack.unpackb(ws.recv(timeout=30), raw=False)
        assert result["request_id"] == "keyed" and result["images"], result


def test_fal_jwt_token_on_plain_http_is_the_callers_key(own_relay):
    """fal-js in client mode sends the token as a query parameter on HTTP too (queue.streamStatus, stream)."""
    base = f"https://{own_relay.queue_host}"
    key = {"Authorization": f"Key {own_relay.key}"}
    with httpx.Client(verify=tls(own_relay), timeout=30) as http:
        submitted = http.post(f"{base}/fal-ai/flux/schnell", headers=key,
                              json={"prompt": "token over http", "image_size": "square", "seed": 7}).json()
        token = http.post(f"{base}/tokens/", json={"allowed_apps": ["flux"]}, headers=key).json()
        stream_url = f"{base}/fal-ai/flux/requests/{submitted['request_id']}/status/stream"
        # Without credentials the request is not the anonymous caller's: 404.
        assert http.get(stream_url).status_code == 404
        with http.stream("GET", f"{stream_url}?fal_jwt_token={token}") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert json.loads(lines[-1][5:])["status"] == "COMPLETED"
        status = http.get(f"{base}/fal-ai/flux/requests/{submitted['request_id']}/status?fal_jwt_token={token}")
        assert status.status_code == 200 and status.json()["status"] == "COMPLETED"
        # A token for another app, or a forged one, is refused with fal's 401.
        other = http.post(f"{base}/tokens/", json={"allowed_apps": ["something-else"]}, headers=key).json()
        assert http.get(f"{stream_url}?fal_jwt_token={other}").status_code == 401
        assert http.get(f"{stream_url}?fal_jwt_token=abc.def").status_code == 401


def raw_exchange(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST /fal-ai/flux/schnell HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
])
def test_http11_needs_exactly_one_host(own_relay, request_bytes):
    answer = raw_exchange(own_relay.http_port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"x-fal-error-type: bad_request" in answer.lower()


def test_http10_without_host_is_served(own_relay):
    answer = raw_exchange(own_relay.http_port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer


def test_one_input_is_one_request_key_over_http_ws_and_canonicalize(own_relay):
    """The same input naming this relay's media is the same RequestKey however it comes: HTTP, /ws, and
    `media-relay canonicalize --key`, whichever way the media URL is spelled (scheme, host, port)."""
    import re
    import subprocess
    import time

    from conftest import BINARY

    key = {"Authorization": f"Key {own_relay.key}"}
    base = f"https://{own_relay.queue_host}"
    with httpx.Client(verify=tls(own_relay), timeout=30) as http:
        made = http.post(f"{base}/fal-ai/flux/schnell", headers=key,
                         json={"prompt": "a source image", "image_size": "square", "seed": 31}).json()
        deadline = time.time() + 60
        while http.get(made["status_url"], headers=key).json()["status"] != "COMPLETED":
            assert time.time() < deadline
            time.sleep(0.05)
        media = http.get(made["response_url"], headers=key).json()["images"][0]["url"]
        assert media.startswith(f"{base}/files/")
        body = {"prompt": "edit the source", "image_url": media, "seed": 32, "num_inference_steps": 4,
                "image_size": "square"}
        first = http.post(f"{base}/fal-ai/flux/dev", headers=key, json=body)
        assert first.headers["x-relay-cache"] == "miss"
        request_key = re.search(r'key="([0-9a-f]+)"', first.headers["cache-status"]).group(1)

    # The same bytes by another spelling of the relay's address, over /ws: the same work (attached or served).
    plain = media.replace(base, f"http://localhost:{own_relay.http_port}")
    with connect(f"ws://127.0.0.1:{own_relay.http_port}/ws", additional_headers=key) as ws:
        ws.send(json.dumps({"type": "submit", "model": "fal-ai/flux/dev", "input": {**body, "image_url": plain}}))
        while True:
            message = json.loads(ws.recv(timeout=30))
            if message["type"] in ("submitted", "error"):
                break
    assert message["type"] == "submitted" and message["cache"] in ("coalesced", "hit"), message

    printed = subprocess.run(
        [BINARY, "canonicalize", "--model", "fal-ai/flux/dev", "--key", "--data-dir", own_relay.data_dir,
         "--relay-url", base, "--relay-url", f"http://localhost:{own_relay.http_port}"],
        input=json.dumps({**body, "image_url": plain}), capture_output=True, text=True, timeout=60, check=True)
    assert printed.stdout.strip() == request_key
