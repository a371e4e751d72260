"""HTTP/2 over TLS (ALPN h2): the same API, many streams on one connection (curl with nghttp2)."""
import json
import subprocess


def curl(relay, *args):
    result = subprocess.run(["curl", "-s", "--http2", "--cacert", relay.ca, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_http2_is_negotiated_and_serves_the_api(relay, fal):
    assert curl(relay, "-o", "/dev/null", "-w", "%{http_version}", f"https://{relay.queue_host}/healthz") == "2"
    handle = fal.submit("fal-ai/flux/schnell", arguments={"prompt": "over h2", "image_size": "square", "seed": 12})
    headers = ["-H", f"Authorization: Key {relay.key}"]
    stream = curl(relay, "-N", *headers, f"https://{relay.queue_host}/fal-ai/flux/requests/{handle.request_id}/status/stream?logs=1")
    events = [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")]
    assert events[-1]["status"] == "COMPLETED"
    result = json.loads(curl(relay, *headers, f"https://{relay.queue_host}/fal-ai/flux/requests/{handle.request_id}"))
    url = result["images"][0]["url"]
    assert curl(relay, "-r", "0-99", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}", url) == "2 206 100"


def test_many_sse_streams_share_one_connection(relay, fal):
    handles = [fal.submit("fal-ai/flux/schnell", arguments={"prompt": f"multiplexed {i}", "image_size": "square", "seed": 300 + i}) for i in range(6)]
    urls = []
    for handle in handles:
        urls += ["-H", f"Authorization: Key {relay.key}", f"https://{relay.queue_host}/fal-ai/flux/requests/{handle.request_id}/status/stream"]
    # --parallel multiplexes all transfers over one HTTP/2 connection.
    out = curl(relay, "--parallel", "--parallel-max", "10", "-N", "-w", "%{num_connects}\\n", *urls)
    assert out.count('"status":"COMPLETED"') == 6
    connects = [line for line in out.splitlines() if line.strip().isdigit()]
    assert sum(int(c) for c in connects) == 1, connects


def test_sigterm_ends_an_http2_sse_stream_cleanly():
    """Shutdown reaches each HTTP/2 stream too: the SSE stream ends with a retry hint, not at the drain deadline."""
    import tempfile
    import time

    import httpx

    from conftest import Relay

    with tempfile.TemporaryDirectory(prefix="media-relay-h2-term-") as data_dir:
        server = Relay(data_dir, extra_args=["--synthetic-time-scale", "3"])
        try:
            headers = {"Authorization": f"Key {server.key}"}
            submitted = httpx.post(f"http://127.0.0.1:{server.http_port}/fal-ai/flux/dev", json={"prompt": "long"},
                                   headers=headers).json()
            url = f"https://{server.queue_host}/fal-ai/flux/requests/{submitted['request_id']}/status/stream"
            process = subprocess.Popen(["curl", "-s", "-N", "--http2", "--cacert", server.ca, "-H",
                                        f"Authorization: Key {server.key}", url], stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)  # attached and streaming
            started = time.monotonic()
            server.process.terminate()
            out, _ = process.communicate(timeout=20)
            assert "retry: 1000" in out, out[-500:]
            assert time.monotonic() - started < 8, "the stream waited for the drain deadline"
            assert process.returncode == 0  # a clean end of the stream, not a reset
            server.process.wait(20)
            assert server.process.returncode == 0
        finally:
            server.stop()


def test_reads_over_http2_answer_as_over_http1(relay, fal):
    """The HTTP/2 fast lane answers health, status and result from the HEADERS frame: the same status, fields and
    bytes as HTTP/1.1, on one connection that also carries what it leaves to the stream channels (an unknown id, an
    SSE stream, a submission)."""
    import ssl

    import httpx

    handle = fal.submit("fal-ai/flux/schnell", arguments={"prompt": "h2 fast lane", "image_size": "square", "seed": 41})
    fal.result("fal-ai/flux/schnell", handle.request_id)
    headers = {"Authorization": f"Key {relay.key}"}
    base = f"https://{relay.queue_host}"
    paths = ["/healthz", f"/fal-ai/flux/requests/{handle.request_id}/status?logs=1",
             f"/fal-ai/flux/requests/{handle.request_id}"]
    compared = ("content-type", "content-length", "cache-control", "etag", "x-relay-cache")
    context = ssl.create_default_context(cafile=relay.ca)
    with httpx.Client(http2=True, verify=context, timeout=30) as h2, \
            httpx.Client(http2=False, verify=context, timeout=30) as h1:
        for _ in range(2):  # twice: a settled answer is sent again from its bytes on HTTP/1.1
            for path in paths:
                over_h2, over_h1 = h2.get(base + path, headers=headers), h1.get(base + path, headers=headers)
                assert over_h2.http_version == "HTTP/2" and over_h1.http_version == "HTTP/1.1"
                assert over_h2.status_code == over_h1.status_code == 200, (path, over_h2.text)
                assert over_h2.content == over_h1.content or path == "/healthz", path
                for name in compared:
                    assert over_h2.headers.get(name) == over_h1.headers.get(name), (path, name)
                assert over_h2.headers["x-fal-request-id"]
        head = h2.head(base + paths[2], headers=headers)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(h1.get(base + paths[2], headers=headers).content)
        # Left to the stream channels, on the same connection: an unknown id, a refused key, an SSE stream, a submit.
        assert h2.get(f"{base}/fal-ai/flux/requests/00000000-0000-0000-0000-000000000000", headers=headers).status_code == 404
        assert h2.get(base + paths[2], headers={"Authorization": "Key nope"}).status_code == 401
        with h2.stream("GET", base + paths[1].replace("/status?logs=1", "/status/stream"), headers=headers) as stream:
            assert stream.status_code == 200 and "COMPLETED" in stream.read().decode()
        again = h2.post(f"{base}/fal-ai/flux/schnell", json={"prompt": "h2 fast lane", "image_size": "square",
                                                            "seed": 41}, headers=headers)
        assert again.status_code == 200 and again.headers["x-relay-cache"] == "hit", again.headers
        assert h2.get(again.json()["response_url"], headers=headers).json() == h1.get(base + paths[2], headers=headers).json()
