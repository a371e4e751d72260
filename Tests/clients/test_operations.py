"""Operating the relay: access logs (logfmt and JSON), metrics by route, live statistics, SSE keep-alives and how a
shutdown ends open streams."""
import json
import signal
import tempfile
import threading
import time

import httpx
import pytest

from conftest import Relay


@pytest.fixture(scope="module")
def json_relay():
    with tempfile.TemporaryDirectory(prefix="media-relay-ops-") as data_dir:
        server = Relay(data_dir, extra_args=[
            "--log-format", "json", "--log-level", "info", "--sse-keepalive-seconds", "1",
            "--synthetic-time-scale", "1",
        ])
        try:
            yield server
        finally:
            server.stop()


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    return None


def access_lines(server):
    lines = []
    for line in list(server.output):
        line = line.strip()
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "access":
                lines.append(record)
    return lines


def test_json_access_log_has_one_line_per_request_with_key_id_and_cache(json_relay):
    base = f"http://127.0.0.1:{json_relay.http_port}"
    headers = {"Authorization": f"Key {json_relay.key}"}
    body = {"prompt": "access log", "seed": 7, "num_inference_steps": 1, "image_size": "square"}
    response = httpx.post(f"{base}/fal-ai/flux/schnell", json=body, headers=headers)
    request_id = response.json()["request_id"]
    httpx.get(f"{base}/healthz")
    key_id, secret = json_relay.key.split(":", 1)

    def submit_line():
        return next((line for line in access_lines(json_relay) if line.get("request_id") == request_id), None)

    line = wait_for(submit_line)  # the writer batches: at most 50 ms
    assert line is not None, "".join(json_relay.output[-20:])
    assert line["method"] == "POST" and line["path"] == "/fal-ai/flux/schnell" and line["status"] == "200"
    assert line["route"] == "submit" and line["cache"] == "miss" and line["key_id"] == key_id
    assert float(line["duration_ms"]) >= 0 and int(line["bytes"]) > 0 and line["proto"] == "http/1.1"
    assert line["level"] == "info" and line["ts"].endswith("Z")
    assert all(secret not in raw for raw in json_relay.output), "the key itself must never be logged"
    assert wait_for(lambda: any(l["route"] == "health" for l in access_lines(json_relay)))


def test_metrics_by_route_status_and_latency(json_relay):
    base = f"http://127.0.0.1:{json_relay.http_port}"
    for _ in range(3):
        httpx.get(f"{base}/healthz")
    httpx.get(f"{base}/files/not-a-digest.png")
    text = httpx.get(f"{base}/metrics").text
    assert 'relay_http_requests_total{route="health",status="200"}' in text
    assert 'relay_http_requests_total{route="not_found",status="404"}' in text
    assert 'relay_http_request_duration_seconds_bucket{route="health"' in text
    assert 'relay_connections_open{protocol="http1"}' in text
    assert "relay_store_bytes" in text and "relay_queue_depth" in text
    assert httpx.get(f"{base}/files/{'0' * 32}.png").status_code == 404  # a well-formed digest the store lacks
    stats = httpx.get(f"{base}/relay/stats").json()
    assert stats["store"]["reads_miss"] >= 1 and stats["http_requests"] >= 5
    text = httpx.get(f"{base}/metrics").text
    assert any(line.startswith('relay_store_reads_total{outcome="miss"}') and float(line.split()[-1]) >= 1
               for line in text.splitlines())


def test_sse_pings_and_watchers_and_a_clean_end_on_shutdown():
    with tempfile.TemporaryDirectory(prefix="media-relay-sse-ops-") as data_dir:
        server = Relay(data_dir, extra_args=["--sse-keepalive-seconds", "1", "--synthetic-time-scale", "3"])
        base = f"http://127.0.0.1:{server.http_port}"
        headers = {"Authorization": f"Key {server.key}"}
        try:
            submitted = httpx.post(f"{base}/fal-ai/flux/dev", json={"prompt": "a slow one"}, headers=headers).json()
            received = []
            ended = threading.Event()

            def follow():
                with httpx.stream("GET", submitted["status_url"].replace(f"https://127.0.0.1:{server.https_port}", base)
                                  + "/stream", headers=headers, timeout=60) as stream:
                    for line in stream.iter_lines():
                        received.append((time.monotonic(), line))
                ended.set()

            threading.Thread(target=follow, daemon=True).start()
            assert wait_for(lambda: any(line == ": ping" for _, line in received), seconds=5), received[:5]
            stats = httpx.get(f"{base}/relay/stats").json()
            assert stats["watchers"]["sse"] == 1
            assert stats["connections"]["open"]["http1"] >= 1
            # The stream's connection left the HTTP/1.1 pipeline: a bare SSE writer serves it.
            assert stats["connections"]["open"]["sse"] == 1
            server.process.send_signal(signal.SIGTERM)
            assert ended.wait(10), "the SSE stream was not ended at shutdown"
            assert any(line == "retry: 1000" for _, line in received)
            server.process.wait(20)
            assert server.process.returncode == 0
        finally:
            server.stop()


def test_a_status_stream_has_one_access_line_at_its_end(json_relay):
    base = f"http://127.0.0.1:{json_relay.http_port}"
    headers = {"Authorization": f"Key {json_relay.key}"}
    body = {"prompt": "streamed access line", "seed": 8, "num_inference_steps": 2, "image_size": "square"}
    submitted = httpx.post(f"{base}/fal-ai/flux/schnell", json=body, headers=headers).json()
    url = f"{base}/fal-ai/flux/requests/{submitted['request_id']}/status/stream?logs=1"
    with httpx.stream("GET", url, headers=headers, timeout=30) as stream:
        assert stream.headers["connection"] == "close" and "transfer-encoding" not in stream.headers
        text = "".join(stream.iter_text())
    assert '"status":"COMPLETED"' in text.replace(" ", "")

    def stream_lines():
        return [l for l in access_lines(json_relay) if l.get("route") == "status_stream"]

    lines = wait_for(stream_lines)
    assert lines and len(lines) == 1, lines
    line = lines[0]
    assert line["status"] == "200" and line["request_id"] == submitted["request_id"] and line["proto"] == "http/1.1"
    assert int(line["bytes"]) == len(text.encode()) and line["key_id"] == json_relay.key.split(":", 1)[0]
    assert 'relay_http_requests_total{route="status_stream",status="200"}' in httpx.get(f"{base}/metrics").text


def test_uploads_have_their_own_access_lines(json_relay):
    base = f"http://127.0.0.1:{json_relay.http_port}"
    response = httpx.post(f"{base}/files/upload", content=b"access log upload " * 100,
                          headers={"Authorization": f"Key {json_relay.key}", "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    request_id = response.headers["x-fal-request-id"]
    line = wait_for(lambda: next((l for l in access_lines(json_relay) if l.get("request_id") == request_id), None))
    assert line is not None
    assert line["route"] == "upload" and line["key_id"] == json_relay.key.split(":", 1)[0] and line["status"] == "200"
