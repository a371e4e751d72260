"""WebSockets: the /ws watch protocol, fal realtime (msgpack) with the official client, tokens, rate limits."""
import asyncio
import base64
import json
import ssl

import msgpack
import pytest
from websockets.sync.client import connect


def ws_url(relay, path="/ws", host=None):
    return f"wss://{host or relay.queue_host}{path}"


def tls(relay):
    return ssl.create_default_context(cafile=relay.ca)


def receive_json(ws, timeout=30):
    return json.loads(ws.recv(timeout=timeout))


def test_watch_protocol_submits_and_streams_events(relay):
    with connect(ws_url(relay), ssl=tls(relay), additional_headers={"Authorization": f"Key {relay.key}"}) as ws:
        ws.send(json.dumps({"type": "submit", "model": "fal-ai/flux/schnell", "input": {"prompt": "over a socket", "image_size": "square", "seed": 90}}))
        submitted = receive_json(ws)
        assert submitted["type"] == "submitted" and submitted["request_id"]
        events = []
        while True:
            message = receive_json(ws)
            assert message["type"] in ("event", "partial") and message["request_id"] == submitted["request_id"]
            if message["type"] == "partial":
                continue
            events.append(message)
            if message["status"]["status"] == "COMPLETED":
                break
        seqs = [event["seq"] for event in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        logs = [log["message"] for event in events for log in (event["status"]["logs"] or [])]
        assert logs == [f"step {k}/4" for k in range(1, 5)]
        # One socket watches many requests; resume after a sequence number.
        ws.send(json.dumps({"type": "watch", "request_id": submitted["request_id"], "after": seqs[-2]}))
        again = receive_json(ws)
        assert again["seq"] == seqs[-1] and again["status"]["status"] == "COMPLETED"
        ws.send(json.dumps({"type": "watch", "request_id": "00000000-0000-4000-8000-000000000000"}))
        assert receive_json(ws)["type"] == "error"
        ws.send("not json")
        assert receive_json(ws)["type"] == "error"
        ws.send(json.dumps({"type": "dance"}))
        assert "unknown message type" in receive_json(ws)["detail"]


def watch_until_completed(ws, request_id):
    """Every message for `request_id` up to and including the COMPLETED event."""
    messages = []
    while True:
        message = receive_json(ws)
        assert message["request_id"] == request_id and message["type"] in ("event", "partial"), message
        messages.append(message)
        if message["type"] == "event" and message["status"]["status"] == "COMPLETED":
            return messages


def test_watch_delivers_partial_previews_and_text_chunks_before_the_end(relay, http):
    headers = {"Authorization": f"Key {relay.key}"}
    # The text job is submitted over HTTP and watched from the start: the watch replays what already happened (the
    # job may well have ended), then follows live.
    text = http.post(f"https://{relay.queue_host}/fal-ai/any-llm", headers=headers,
                     json={"prompt": "Say hello over a socket", "seed": 92, "max_tokens": 12}).json()
    with connect(ws_url(relay), ssl=tls(relay), additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "submit", "model": "fal-ai/flux/schnell",
                            "input": {"prompt": "partials over a socket", "image_size": "square", "seed": 91}}))
        submitted = receive_json(ws)
        assert submitted["type"] == "submitted" and submitted["cache"] == "miss", submitted
        messages = watch_until_completed(ws, submitted["request_id"])
        seqs = [message["seq"] for message in messages]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert messages[-1]["status"]["status"] == "COMPLETED" and "error" not in messages[-1]["status"]
        partials = [message["data"] for message in messages if message["type"] == "partial"]
        assert partials, [message["type"] for message in messages]
        preview = partials[0]["images"][0]
        assert partials[0]["partial"] is True and preview["url"].startswith("data:image/png;base64,")
        assert base64.b64decode(preview["url"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")

        ws.send(json.dumps({"type": "watch", "request_id": text["request_id"]}))
        messages = watch_until_completed(ws, text["request_id"])
        chunks = [message["data"]["output"] for message in messages if message["type"] == "partial"]
        assert len(chunks) >= 2, chunks
        # The text so far, growing chunk by chunk, up to the final output.
        assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(chunks, chunks[1:]))
        final = http.get(f"https://{relay.queue_host}/fal-ai/any-llm/requests/{text['request_id']}", headers=headers).json()
        assert chunks[-1] == final["output"]


def test_watch_requires_a_valid_key_and_binary_is_refused(relay):
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(relay), ssl=tls(relay), additional_headers={"Authorization": "Key bad:key"})
    assert refused.value.response.status_code == 401
    with connect(ws_url(relay), ssl=tls(relay), additional_headers={"Authorization": f"Key {relay.key}"}) as ws:
        ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1003


def test_oversized_message_closes_with_1009(relay):
    from websockets.exceptions import ConnectionClosed

    with connect(ws_url(relay), ssl=tls(relay), additional_headers={"Authorization": f"Key {relay.key}"}, max_size=None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.send("x" * (2 << 20))  # the relay may close while this is still being sent
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009


def test_tokens_endpoint_and_token_auth(relay, http):
    response = http.post(f"https://{relay.queue_host}/tokens/", json={"allowed_apps": ["fast-lcm-diffusion"], "token_expiration": 120},
                         headers={"Authorization": f"Key {relay.key}"})
    assert response.status_code == 200
    token = response.json()
    assert isinstance(token, str) and "." in token
    url = ws_url(relay, "/fal-ai/fast-lcm-diffusion/realtime?fal_jwt_token=" + token, host=relay.run_host)
    with connect(url, ssl=tls(relay)) as ws:
        ws.send(msgpack.packb({"prompt": "token realtime", "seed": 3, "request_id": "abc"}, use_bin_type=True))
        result = msgpack.unpackb(ws.recv(timeout=30), raw=False)
        assert result["request_id"] == "abc" and result["images"]
    # A token for another app does not open this one; anonymous callers get no token.
    other = http.post(f"https://{relay.queue_host}/tokens/", json={"allowed_apps": ["something-else"]}, headers={"Authorization": f"Key {relay.key}"}).json()
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        connect(ws_url(relay, "/fal-ai/fast-lcm-diffusion/realtime?fal_jwt_token=" + other, host=relay.run_host), ssl=tls(relay))
    assert http.post(f"https://{relay.queue_host}/tokens/", json={}).status_code == 401


def test_official_realtime_client(fal):
    async def session():
        client = fal.AsyncClient()
        async with client.realtime("fal-ai/fast-lcm-diffusion", use_jwt=False) as connection:
            await connection.send({"prompt": "realtime fox", "seed": 1})
            first = await connection.recv()
            await connection.send({"prompt": "realtime fox", "seed": 1})
            second = await connection.recv()
            await connection.send({"image_size": "huge"})
            with pytest.raises(fal.client.RealtimeError):
                await connection.recv()
            return first, second

    first, second = asyncio.run(session())
    assert first["images"][0]["url"].startswith("https://")
    assert first == second  # the second is a cache hit: same bytes, same URL


def test_realtime_needs_a_realtime_model(relay, http):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(relay, "/fal-ai/flux/dev/realtime", host=relay.run_host), ssl=tls(relay), additional_headers={"Authorization": f"Key {relay.key}"})
    assert refused.value.response.status_code == 404
    plain = http.get(f"https://{relay.run_host}/fal-ai/fast-lcm-diffusion/realtime", headers={"Authorization": f"Key {relay.key}"})
    assert plain.status_code == 426


def test_anonymous_submissions_are_rate_limited_with_retry_after(relay, http):
    url = f"http://127.0.0.1:{relay.http_port}/fal-ai/flux/schnell"
    import httpx

    codes = []
    last = None
    for i in range(12):
        last = httpx.post(url, json={"prompt": f"anon {i}", "image_size": "square", "seed": i})
        codes.append(last.status_code)
        if last.status_code == 429:
            break
    assert 429 in codes, codes
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["x-fal-error-type"] == "rate_limited" and last.json()["error_type"] == "rate_limited"
    assert "ratelimit" in last.headers and "ratelimit-policy" in last.headers
    # Reads are a separate budget: polling is never throttled by having spent the submissions.
    for _ in range(30):
        assert httpx.get(f"http://127.0.0.1:{relay.http_port}/healthz").status_code == 200


def read_http_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def test_upgrade_after_other_requests_on_one_connection(relay):
    """fal-js opens its realtime socket on a connection that already carried other calls: the upgrade must work there
    too, not only as a connection's first request (NIO's upgrade handler looks only at that one)."""
    import os
    import socket
    import struct

    port = relay.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        body = json.dumps({"prompt": "before the upgrade", "image_size": "square", "seed": 93}).encode()
        sock.sendall(b"POST /fal-ai/flux/schnell HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Key {relay.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head, rest = read_http_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += sock.recv(4096)
        request_id = json.loads(rest[:length])["request_id"]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head, rest = read_http_head(sock)
        assert head.startswith(b"HTTP/1.1 200") and rest == b'{"status":"ok"}', (head, rest)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                     f"Authorization: Key {relay.key}\r\n\r\n".encode())
        head, rest = read_http_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        # The socket speaks WebSocket now: watch the request submitted before the upgrade.
        payload = json.dumps({"type": "watch", "request_id": request_id}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        frame = rest
        while len(frame) < 2:
            frame += sock.recv(4096)
        assert frame[0] == 0x81, frame[:2]
        size = frame[1] & 0x7F
        offset = 2
        if size == 126:
            while len(frame) < 4:
                frame += sock.recv(4096)
            size, offset = struct.unpack(">H", frame[2:4])[0], 4
        while len(frame) < offset + size:
            frame += sock.recv(65536)
        message = json.loads(frame[offset:offset + size])
        assert message["request_id"] == request_id and message["type"] in ("event", "partial"), message
