"""What the client tests stand up beside the relay, or read from it, in one place: a CONNECT proxy that tunnels fal's
storage hosts to a relay (so fal_client.upload_file reaches it unmodified), a webhook receiver, and an SSE reader."""
import base64
import hashlib
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAL_STORAGE_HOSTS = ("rest.fal.ai", "v3.fal.media")


class ConnectProxy:
    """An HTTP CONNECT proxy that tunnels fal's fixed storage hosts (port 443) to `target_port` on 127.0.0.1 and
    refuses anything else (HTTPS_PROXY, which httpx honours). The target's certificate must cover those names."""

    HOSTS = FAL_STORAGE_HOSTS

    def __init__(self, target_port):
        self.target_port = target_port
        self.tunnelled = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.tunnel, args=(client,), daemon=True).start()

    def tunnel(self, client):
        with client:
            client.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            method, authority = head.split(b" ")[:2]
            host, _, port = authority.decode().rpartition(":")
            if method != b"CONNECT" or host not in self.HOSTS or port != "443":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnelled.append(host)
            with socket.create_connection(("127.0.0.1", self.target_port), timeout=30) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                sockets = [client, upstream]
                while True:
                    readable, _, _ = select.select(sockets, [], [], 30)
                    if not readable:
                        return
                    for source in readable:
                        data = source.recv(65536)
                        if not data:
                            return
                        (upstream if source is client else client).sendall(data)

    def close(self):
        self.server.close()


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1: records every POST (`body` as sent, `json` parsed); answers each path from a
    scripted list of statuses, 200 when none is left."""

    def __init__(self):
        self.calls = []
        self.scripts = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.calls.append({
                        "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body, "json": json.loads(body), "at": time.time(),
                    })
                    script = receiver.scripts.get(self.path, [])
                    status = script.pop(0) if script else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path, statuses):
        with self.lock:
            self.scripts[path] = list(statuses)

    def calls_to(self, path):
        with self.lock:
            return [call for call in self.calls if call["path"] == path]

    def wait_for(self, path, count, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            calls = self.calls_to(path)
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.calls_to(path))} calls, expected {count}")


def verify_fal_webhook(jwks, headers, body, max_age=300):
    """What a receiver written for fal does (fal's docs, PROTOCOL.md §11.4): the hex Ed25519 signature in
    X-Fal-Webhook-Signature over `request_id \n user_id \n timestamp \n sha256_hex(body)`, by one of the JWKS's
    OKP/Ed25519 keys, with a timestamp within `max_age` seconds."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    names = ("x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp", "x-fal-webhook-signature")
    if not all(headers.get(name) for name in names):
        return False
    request_id, user_id, timestamp, signature = (headers[name] for name in names)
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age:
        return False
    message = f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    for key in jwks.get("keys", []):
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            continue
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(signature), message)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def read_events(response, limit=None, events=None, timeout=60):
    """Parses SSE events from a streaming httpx response into (id, data) pairs, appended to `events` as they arrive
    (another thread may watch it); stops after `limit` data events, fails if the stream is still open at `timeout`."""
    events, event_id, data = [] if events is None else events, None, []
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        assert time.monotonic() < deadline, f"the stream was still open after {timeout} s: {events[-3:]}"
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((event_id, json.loads("\n".join(data))))
            event_id, data = None, []
            if limit and len(events) >= limit:
                break
    return events
