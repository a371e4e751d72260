"""`media-relay submit`: the command-line client against a live relay, over http and https."""
import json
import os
import re
import signal
import struct
import subprocess
import time

import pytest

from conftest import BINARY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def submit(*args, key=None, stdin=None, env_extra=None, timeout=120):
    """Runs `media-relay submit` with a clean environment (no FAL_KEY / SSL_CERT_FILE / MEDIA_RELAY_HOST leaking in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "SSL_CERT_FILE", "MEDIA_RELAY_HOST")}
    if key is not None:
        env["FAL_KEY"] = key
    env.update(env_extra or {})
    return subprocess.run([BINARY, "submit", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)


def http_host(relay):
    return f"http://127.0.0.1:{relay.http_port}"


def https_host(relay):
    return f"https://127.0.0.1:{relay.https_port}"


def png_size(path):
    """Checks the PNG signature and IHDR chunk; returns (width, height)."""
    with open(path, "rb") as f:
        head = f.read(33)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG: {head[:8]!r}"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_image_end_to_end_over_http(relay, tmp_path):
    # Media URLs point at the HTTPS listener: SSL_CERT_FILE is how the CA gets trusted here.
    out = tmp_path / "images"
    body = {"prompt": "submit cli over http", "image_size": {"width": 320, "height": 240}, "seed": 11}
    result = submit("fal-ai/flux/dev", "--input", json.dumps(body), "--out", str(out), "--host", http_host(relay),
                    key=relay.key, env_extra={"SSL_CERT_FILE": relay.ca})
    assert result.returncode == 0, result.stderr
    paths = result.stdout.splitlines()
    assert len(paths) == 1
    path = paths[0]
    assert os.path.dirname(path) == str(out)
    assert re.fullmatch(r"[0-9a-f-]{36}-1\.png", os.path.basename(path)), path
    assert png_size(path) == (320, 240)
    assert os.path.getsize(path) > 100
    assert not [name for name in os.listdir(out) if name.endswith(".part")]  # the temp file was renamed away
    assert "cache miss" in result.stderr
    # Progress on stderr, one plain line per change (stderr is a pipe, not a TTY): no escape codes.
    assert "\x1b[" not in result.stderr
    steps = re.findall(r"^\[\d+\.\ds\] in progress, step (\d+)/(\d+)$", result.stderr, re.M)
    assert steps, result.stderr
    assert steps[-1][0] == steps[-1][1]
    assert [int(n) for n, _ in steps] == sorted(int(n) for n, _ in steps)
    assert re.search(r"^\[\d+\.\ds\] completed$", result.stderr, re.M)
    assert re.search(r"^\[\d+\.\ds\] in queue, position \d+$", result.stderr, re.M)

    # The same input again is a cache hit, and the summary says so.
    again = submit("fal-ai/flux/dev", "--input", json.dumps(body), "--out", str(out), "--host", http_host(relay),
                   key=relay.key, env_extra={"SSL_CERT_FILE": relay.ca})
    assert again.returncode == 0, again.stderr
    assert "cache hit" in again.stderr
    assert png_size(again.stdout.strip()) == (320, 240)


def test_image_end_to_end_over_https_with_ca_and_input_file(relay, tmp_path):
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps({"prompt": "submit cli over https", "image_size": "square", "seed": 12, "num_images": 2}))
    out = tmp_path / "a" / "b" / "c"  # created, parents included
    result = submit("fal-ai/flux/dev", "--input", f"@{input_file}", "--out", str(out), "--host", https_host(relay),
                    "--ca", relay.ca, key=relay.key)
    assert result.returncode == 0, result.stderr
    paths = result.stdout.splitlines()
    assert len(paths) == 2
    assert [os.path.basename(p).rsplit("-", 1)[1] for p in paths] == ["1.png", "2.png"]
    for path in paths:
        assert os.path.dirname(path) == str(out)
        assert png_size(path) == (512, 512)
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        assert a.read() != b.read()


def test_https_without_the_ca_fails_clearly(relay, tmp_path):
    result = submit("fal-ai/flux/dev", "--input", '{"prompt":"untrusted"}', "--out", str(tmp_path),
                    "--host", https_host(relay), key=relay.key)
    assert result.returncode == 1
    assert "--ca" in result.stderr
    assert result.stdout == "" and os.listdir(tmp_path) == []


def test_json_prints_the_result_and_downloads_nothing(relay, tmp_path):
    body = {"prompt": "submit cli json", "image_size": "square_hd", "seed": 13}
    result = submit("fal-ai/flux/dev", "--input", "-", "--json", "--out", str(tmp_path / "unused"),
                    "--host", http_host(relay), key=relay.key, stdin=json.dumps(body))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["seed"] == 13
    assert document["images"][0]["url"].startswith("https://")
    assert document["images"][0]["content_type"] == "image/png"
    assert not (tmp_path / "unused").exists()


def test_validation_error_422_prints_the_field(relay, tmp_path):
    result = submit("fal-ai/flux/dev", "--input", '{"promt":"typo"}', "--out", str(tmp_path),
                    "--host", http_host(relay), key=relay.key)
    assert result.returncode == 1
    assert "HTTP 422" in result.stderr and "prompt: field required" in result.stderr
    assert result.stdout == "" and os.listdir(tmp_path) == []


def test_unknown_model_404(relay, tmp_path):
    result = submit("fal-ai/no-such-model", "--input", '{"prompt":"x"}', "--out", str(tmp_path),
                    "--host", http_host(relay), key=relay.key)
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr and 'Unknown model "fal-ai/no-such-model"' in result.stderr
    assert result.stdout == ""


def test_bad_key_401(relay, tmp_path):
    result = submit("fal-ai/flux/dev", "--input", '{"prompt":"x"}', "--out", str(tmp_path),
                    "--host", http_host(relay), "--key", "nope:nope")
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr and "Invalid or revoked API key" in result.stderr
    assert "FAL_KEY" in result.stderr  # tells how to pass a key
    assert result.stdout == ""


@pytest.mark.parametrize("value, message", [
    ('{"prompt": ', "invalid JSON in --input"),
    ('{"a":1,"a":2}', "duplicate key"),
    ('["not", "an", "object"]', "must be a JSON object"),
    ("@/nonexistent/input.json", "cannot read the input file"),
])
def test_invalid_input_exits_2_before_any_network(value, message, tmp_path):
    # An unroutable host: had the command tried to connect, it would say so (or hang until --timeout).
    result = submit("fal-ai/flux/dev", "--input", value, "--out", str(tmp_path / "out"),
                    "--host", "http://192.0.2.1:9", "--timeout", "5", timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "cannot reach" not in result.stderr and "submitted" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_invalid_model_and_host_exit_2():
    bad_model = submit("flux", "--input", "{}", "--host", "http://192.0.2.1:9", timeout=30)
    assert bad_model.returncode == 2 and "invalid model" in bad_model.stderr
    bad_host = submit("fal-ai/flux/dev", "--input", "{}", "--host", "ftp://example.com", timeout=30)
    assert bad_host.returncode == 2 and "invalid --host" in bad_host.stderr


def test_host_from_environment_and_stdin_input(relay, tmp_path):
    body = {"prompt": "submit cli env host", "image_size": "square", "seed": 14}
    result = submit("fal-ai/flux/schnell", "--input", "-", "--out", str(tmp_path), key=relay.key, stdin=json.dumps(body),
                    env_extra={"MEDIA_RELAY_HOST": http_host(relay) + "/", "SSL_CERT_FILE": relay.ca})
    assert result.returncode == 0, result.stderr
    (path,) = result.stdout.splitlines()
    assert png_size(path) == (512, 512)


def test_interrupt_cancels_the_request(relay, tmp_path, http):
    MODEL = "fal-ai/kling-video/v2.1/standard/text-to-video"
    # 100 steps of 48 frames take ~7 s even at the test time scale: long enough to interrupt it while it runs.
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "MEDIA_RELAY_HOST")}
    env["FAL_KEY"] = relay.key
    process = subprocess.Popen(
        [BINARY, "submit", MODEL, "--input",
         json.dumps({"prompt": f"interrupt me {time.time()}", "num_inference_steps": 100, "num_frames": 48}),
         "--out", str(tmp_path), "--host", http_host(relay)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines = []
    request_id = None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"request ([0-9a-f-]{36}) submitted", line)
        if match:
            request_id = match.group(1)
        if request_id and "in progress" in line:
            break
    assert request_id, "".join(lines)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    stderr = "".join(lines) + stderr
    assert process.returncode == 130, stderr
    assert f"cancelled request {request_id}" in stderr
    assert stdout == "" and os.listdir(tmp_path) == []
    status = http.get(f"{https_host(relay)}/fal-ai/kling-video/requests/{request_id}/status",
                      headers={"Authorization": f"Key {relay.key}"}).json()
    assert status["status"] == "COMPLETED" and status.get("error"), status


class FlakyFront:
    """A pass-through front for the relay's http listener that answers the first submit with 429 (Retry-After: 1)
    and every status stream with 503, so the command must wait and retry, then poll."""

    def __init__(self, relay):
        import http.server
        import threading

        import httpx

        upstream = f"http://127.0.0.1:{relay.http_port}"
        front = self
        self.submits = 0
        self.streams = 0
        self.polls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body, headers=()):
                self.send_response(status)
                for name, value in [("content-type", "application/json"), ("content-length", str(len(body))), *headers]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path.split("?")[0]
                if self.command == "POST":
                    front.submits += 1
                    if front.submits == 1:
                        return self.reply(429, b'{"detail":"Rate limit exceeded"}', [("retry-after", "1")])
                if path.endswith("/status/stream"):
                    front.streams += 1
                    return self.reply(503, b'{"detail":"streams are off here"}')
                if path.endswith("/status"):
                    front.polls += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                headers["host"] = self.headers["host"]  # the relay builds status URLs on it: they come back here
                with httpx.Client(timeout=30) as client:
                    response = client.request(self.command, upstream + self.path, headers=headers, content=body)
                passed = [(k, v) for k, v in response.headers.items()
                          if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-type")]
                self.reply(response.status_code, response.content, passed)

            do_GET = do_POST = do_PUT = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_retries_429_after_retry_after_and_polls_when_the_stream_fails(relay, tmp_path):
    front = FlakyFront(relay)
    try:
        started = time.time()
        body = {"prompt": f"submit cli through a flaky front {started}", "image_size": "square", "seed": 15}
        result = submit("fal-ai/flux/dev", "--input", json.dumps(body), "--out", str(tmp_path), "--host", front.url,
                        key=relay.key, env_extra={"SSL_CERT_FILE": relay.ca})
        elapsed = time.time() - started
    finally:
        front.close()
    assert result.returncode == 0, result.stderr
    assert front.submits == 2 and elapsed >= 1.0  # waited for Retry-After
    assert "rate limited" in result.stderr and "Rate limit exceeded" in result.stderr
    assert front.streams == 1 and front.polls >= 1
    assert "polling instead" in result.stderr and "HTTP 503" in result.stderr
    assert re.search(r"in progress, step \d+/28|completed", result.stderr)
    (path,) = result.stdout.splitlines()
    assert png_size(path) == (512, 512)


def test_timeout_cancels_the_request_and_exits_1(relay, tmp_path, http):
    body = {"prompt": f"too slow {time.time()}", "num_inference_steps": 100, "num_frames": 48}
    started = time.time()
    result = submit("fal-ai/kling-video/v2.1/standard/text-to-video", "--input", json.dumps(body), "--timeout", "1",
                    "--out", str(tmp_path), "--host", http_host(relay), key=relay.key)
    assert result.returncode == 1, result.stderr
    assert time.time() - started < 10
    assert "timed out after 1 s" in result.stderr
    request_id = re.search(r"cancelled request ([0-9a-f-]{36})", result.stderr).group(1)
    status = http.get(f"{https_host(relay)}/fal-ai/kling-video/requests/{request_id}/status",
                      headers={"Authorization": f"Key {relay.key}"}).json()
    assert status["status"] == "COMPLETED" and status.get("error"), status
    assert result.stdout == "" and os.listdir(tmp_path) == []


def test_unreachable_host_fails_clearly(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = submit("fal-ai/flux/dev", "--input", '{"prompt":"x"}', "--out", str(tmp_path),
                    "--host", f"http://127.0.0.1:{port}", "--timeout", "20", timeout=60)
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/fal-ai/flux/dev" in result.stderr
