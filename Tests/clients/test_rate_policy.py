"""The rate-limit policy with the relay's defaults, as apps use a relay: one backend key with many requests in flight,
a viral prompt, many watchers of one job, media fetched like a CDN's, and anonymous callers starting work."""
import asyncio
import socket
import subprocess
import time

import httpx
import pytest

from conftest import BINARY, started_relay

MODEL = "fal-ai/flux/schnell"


@pytest.fixture(scope="module")
def busy_relay():
    """Default limits; jobs that take long enough to stay in flight while a test reads them (2 slots, slow steps)."""
    with started_relay("media-relay-policy-", ("--synthetic-time-scale", "20", "--enterprise-rpm", "100000")) as server:
        enterprise = subprocess.run(
            [BINARY, "keys", "create", "--tier", "enterprise", "--data-dir", server.data_dir],
            check=True, capture_output=True, text=True, timeout=60,
        )
        server.enterprise_key = enterprise.stdout.strip().splitlines()[-1]
        yield server


def base(relay):
    return f"http://127.0.0.1:{relay.http_port}"


def key_headers(key):
    return {"Authorization": f"Key {key}"}


async def submit_all(relay, key, bodies, connections=32):
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(connections)

        async def one(body):
            async with semaphore:
                return await client.post(f"{base(relay)}/{MODEL}", json=body, headers=key_headers(key))

        return await asyncio.gather(*(one(body) for body in bodies))


def test_one_key_polls_a_thousand_requests_in_flight_without_a_refusal(busy_relay):
    """A backend serving its users through one key: 1,000 requests in flight, each polled as the fal clients poll. The
    key's polling grows with its work (reads are counted per request), so no poll is refused."""
    bodies = [{"prompt": f"backend job {i}", "image_size": "square", "seed": i, "num_inference_steps": 4}
              for i in range(1000)]
    answers = asyncio.run(submit_all(busy_relay, busy_relay.enterprise_key, bodies))
    assert [a.status_code for a in answers].count(200) == 1000
    status_urls = [a.json()["status_url"] for a in answers]

    async def poll_rounds(rounds):
        codes = []
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            semaphore = asyncio.Semaphore(32)

            async def one(url):
                async with semaphore:
                    return (await client.get(url, headers=key_headers(busy_relay.enterprise_key))).status_code

            for _ in range(rounds):
                codes += await asyncio.gather(*(one(url) for url in status_urls))
        return codes

    started = time.time()
    codes = asyncio.run(poll_rounds(3))
    elapsed = time.time() - started
    assert len(codes) == 3000 and set(codes) <= {200, 202}, {c: codes.count(c) for c in set(codes)}
    # Far more than the 100-request burst a per-key read budget allows, in a few seconds.
    assert elapsed < 30


def test_a_viral_prompt_is_one_job_and_no_refusal(busy_relay):
    """1,000 identical submissions on one pro key at once: one starts work, the rest attach to it, none is refused."""
    body = {"prompt": "the viral prompt", "image_size": "square", "seed": 4242, "num_inference_steps": 4}
    answers = asyncio.run(submit_all(busy_relay, busy_relay.key, [body] * 1000))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 1000, {c: codes.count(c) for c in set(codes)}
    outcomes = [a.headers["x-relay-cache"] for a in answers]
    assert outcomes.count("miss") == 1 and outcomes.count("coalesced") + outcomes.count("hit") == 999


def open_stream(address, port, path, key):
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Key {key}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


def test_two_thousand_watchers_of_one_job_on_one_key(busy_relay):
    """Watchers are capped per key by tier (10,000 for pro), not by a request rate: 2,000 SSE streams of one job through
    one key all get their stream. Connections come from several loopback addresses (the per-address connection cap is
    a separate protection, 1,024 by default)."""
    submitted = httpx.post(f"{base(busy_relay)}/{MODEL}", headers=key_headers(busy_relay.key),
                           json={"prompt": "watched by many", "image_size": "landscape_16_9", "seed": 77}).json()
    path = f"/fal-ai/flux/requests/{submitted['request_id']}/status/stream"
    sockets = []
    try:
        for index in range(2000):
            address = f"127.0.0.{2 + index % 4}"
            sockets.append(open_stream(address, busy_relay.http_port, path, busy_relay.key))
        heads = []
        for sock in sockets:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            heads.append(data.split(b"\r\n", 1)[0])
        refused = [head for head in heads if not head.startswith(b"HTTP/1.1 200")]
        assert not refused, f"{len(refused)} refused, e.g. {refused[:3]}"
    finally:
        for sock in sockets:
            sock.close()


def read_responses(sock, count):
    """`count` pipelined HTTP/1.1 responses: their status codes."""
    data = b""
    codes = []
    while len(codes) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(codes)} responses"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        codes.append(int(lines[0].split()[1]))
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(data) < length:
            chunk = sock.recv(1 << 20)
            assert chunk
            data += chunk
        data = data[length:]
    return codes


def test_media_is_served_like_a_cdn_without_a_rate_limit(busy_relay, relay):
    """Media URLs are capabilities for immutable bytes: 5,000 fetches from one address, no key, none refused."""
    # An image made on the shared relay (fast jobs), which serves it.
    fast = httpx.post(f"http://127.0.0.1:{relay.http_port}/{MODEL}", headers=key_headers(relay.key),
                      json={"prompt": "a media file", "image_size": "square", "seed": 5, "num_inference_steps": 1})
    status_url = fast.json()["status_url"]
    deadline = time.time() + 60
    while httpx.get(status_url, headers=key_headers(relay.key)).json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.05)
    result = httpx.get(fast.json()["response_url"], headers=key_headers(relay.key)).json()
    path = "/" + result["images"][0]["url"].split("/", 3)[3]
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{relay.http_port}\r\n\r\n".encode()
    codes = []
    started = time.time()
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", relay.http_port), timeout=30) as sock:
            sock.sendall(request * 500)
            codes += read_responses(sock, 500)
    elapsed = time.time() - started
    assert len(codes) == 5000 and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert elapsed < 30


def test_media_bytes_per_address_when_configured():
    """`--media-bytes-per-second`: an address that spent its bytes (ten seconds' worth) gets 429 with Retry-After and
    the `media` RateLimit headers, over the fast lane and NIO's path alike; another address, and HEAD, are not
    charged for it."""
    with started_relay("media-relay-media-rate-", ("--synthetic-time-scale", "0", "--media-bytes-per-second",
                                                  "2048")) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        made = httpx.post(f"{base}/{MODEL}", headers=key_headers(server.key),
                          json={"prompt": "a rated file", "image_size": {"width": 64, "height": 64}, "seed": 6,
                                "num_inference_steps": 1})
        deadline = time.time() + 30
        while httpx.get(made.json()["status_url"], headers=key_headers(server.key)).json()["status"] != "COMPLETED":
            assert time.time() < deadline
            time.sleep(0.05)
        url = httpx.get(made.json()["response_url"], headers=key_headers(server.key)).json()["images"][0]["url"]
        path = "/" + url.split("/", 3)[3]
        size = len(httpx.get(base + path).content)  # the first fetch: NIO's path opens the file
        assert size > 0
        codes = [httpx.get(base + path).status_code for _ in range(20480 // size + 2)]
        assert 429 in codes and codes[0] == 200, codes
        refused = httpx.get(base + path)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1, refused.headers
        assert refused.json()["error_type"] == "rate_limited" and "each address" in refused.json()["detail"]
        assert refused.headers["ratelimit-policy"] == '"media";q=2048;w=1', refused.headers
        assert httpx.head(base + path).status_code == 200
        # Another loopback address has bytes of its own.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            assert other.get(base + path).status_code == 200


def test_anonymous_callers_starting_work_are_limited(busy_relay):
    """25 distinct anonymous submissions: the tier's budget (20 a minute, a burst of 5) refuses the last."""
    codes = []
    last = None
    with httpx.Client(timeout=30) as client:
        for i in range(25):
            last = client.post(f"{base(busy_relay)}/{MODEL}",
                               json={"prompt": f"anonymous work {i}", "image_size": "square", "seed": i})
            codes.append(last.status_code)
    assert codes[:5] == [200] * 5 and codes[-1] == 429, codes
    assert last.json()["error_type"] == "rate_limited"
    assert "start upstream work" in last.json()["detail"]
    assert int(last.headers["retry-after"]) >= 1
    # A submission served without new work is still admitted: the first one again attaches to its job.
    again = httpx.post(f"{base(busy_relay)}/{MODEL}", json={"prompt": "anonymous work 0", "image_size": "square", "seed": 0})
    assert again.status_code == 200 and again.headers["x-relay-cache"] in ("coalesced", "hit")


def test_websockets_take_watcher_places_too(busy_relay):
    """A socket watching jobs is a watcher like an SSE stream: an anonymous address has 200 places in all, the next
    upgrade is refused with fal's 429, and a socket that closes gives its place back."""
    import contextlib

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{busy_relay.http_port}/ws"
    with contextlib.ExitStack() as sockets:
        opened = [sockets.enter_context(connect(url, open_timeout=30)) for _ in range(200)]
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, open_timeout=30):
                pass
        assert refused.value.response.status_code == 429
        assert b"open watchers" in refused.value.response.body
        opened[-1].close()
        deadline = time.time() + 10
        while True:
            try:
                sockets.enter_context(connect(url, open_timeout=30))
                break
            except InvalidStatus:
                assert time.time() < deadline, "the closed socket's place did not come back"
                time.sleep(0.05)
