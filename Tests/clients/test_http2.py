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
