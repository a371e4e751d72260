"""HTTP/2 conformance of the relay's TLS port (ALPN h2), frame by frame, against RFC 9113 and RFC 7541 (HPACK).

A hand-driven client: a raw TLS socket, frames built with struct.pack and field blocks with hpack (the HPACK codec of
the h2 project), so that it can send what a well-behaved client library refuses to. It asserts what the RFCs require
of a server, not what one implementation does. Where the RFC leaves a choice, every allowed answer passes: a response
before a malformed request's RST_STREAM (§8.1.1), REFUSED_STREAM or PROTOCOL_ERROR over the concurrency limit
(§5.1.2), no GOAWAY after an invalid preface (§3.4), PROTOCOL_ERROR or STREAM_CLOSED for HEADERS on a closed stream.
One choice is deliberately not accepted: §5.4.1 lets an endpoint treat any stream error as a connection error, but a
stream error answered with GOAWAY fails here, since it costs every other stream on the connection.

Everything the server sends is checked as it arrives (flow-control windows, frame sizes, HPACK table-size rules,
response field validity), so every test also checks the server's own output. Every read is bounded (TIMEOUT); no
sleep orders events: where a test needs to know that the server has dealt with what it was sent, a PING round trip
is the barrier (frames are processed in order, so the PING ACK follows whatever the earlier frames caused).

SwiftNIO's HTTP/2 handler, which the relay used before its own connection codec (HTTP2Connection), failed 82 of
these cases: connections left open after a connection error's GOAWAY, GOAWAY naming stream 2^31-1, field values with
white space at either end accepted, a PRIORITY frame of the wrong length or one stream over the concurrency limit
ending the whole connection, and no GOAWAY on shutdown.
"""
import json
import os
import select
import socket
import ssl
import struct
import time

import hpack
import pytest

from conftest import started_relay

TIMEOUT = 5.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION"]
UNKNOWN_TYPE = 0xFA
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = \
    range(1, 7)

# Error codes (§7).
ERROR_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
               "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
(NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR,
 REFUSED_STREAM, CANCEL, COMPRESSION_ERROR) = range(10)

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384


def error_name(code):
    return ERROR_NAMES[code] if code < len(ERROR_NAMES) else f"0x{code:x}"


# --- frames -----------------------------------------------------------------------------------------------------


def frame(kind, flags, stream, payload=b""):
    """One frame as it goes on the wire (§4.1): 24-bit length, type, flags, R + 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def settings(pairs=(), ack=False):
    payload = b"".join(struct.pack(">HI", key, value) for key, value in dict(pairs).items())
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping(opaque=b"conform!", ack=False):
    return frame(PING, ACK if ack else 0, 0, opaque)


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def rst_stream(stream, code):
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def priority(stream, depends_on=0, weight=15):
    return frame(PRIORITY, 0, stream, struct.pack(">IB", depends_on, weight))


class Frame:
    def __init__(self, kind, flags, stream, payload):
        self.type, self.flags, self.stream, self.payload = kind, flags, stream, payload

    def __repr__(self):
        name = FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else f"0x{self.type:x}"
        detail = ""
        if self.type == RST_STREAM and len(self.payload) == 4:
            detail = " " + error_name(struct.unpack(">I", self.payload)[0])
        if self.type == GOAWAY and len(self.payload) >= 8:
            last, code = struct.unpack(">II", self.payload[:8])
            detail = f" last={last} {error_name(code)}"
        return f"<{name} stream={self.stream} flags=0x{self.flags:x} len={len(self.payload)}{detail}>"


class Stream:
    """What the server sent on one stream, and the flow-control counts for it."""

    def __init__(self, stream_id):
        self.id = stream_id
        self.head = False  # a HEAD request: content-length without content (§8.1.1)
        self.informational = []  # 1xx field sections
        self.headers = None  # the final response's fields, [(name, value)]
        self.trailers = None
        self.body = bytearray()
        self.ended = False  # END_STREAM received
        self.reset = None  # the error code of a RST_STREAM received
        self.received = 0  # flow-controlled octets received (DATA payloads, padding included)
        self.updates_sent = 0  # WINDOW_UPDATE increments we sent for it
        self.sent = 0  # DATA octets we sent
        self.updates_received = 0  # WINDOW_UPDATE increments the server sent for it
        self.reset_sent = False  # we sent RST_STREAM

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        return int(self.header(":status")) if self.headers else None

    def header(self, name):
        values = [value for key, value in self.headers or () if key == name]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def json(self):
        return json.loads(bytes(self.body))

    def __repr__(self):
        return (f"<stream {self.id} status={self.status} body={len(self.body)}B ended={self.ended} "
                f"reset={None if self.reset is None else error_name(self.reset)}>")


# --- the client -------------------------------------------------------------------------------------------------


class H2:
    """One TLS connection to the relay with ALPN h2, driven frame by frame.

    It keeps the HPACK contexts, acknowledges the server's SETTINGS and answers its PINGs, and checks everything the
    server sends as it arrives: flow-control windows and frame sizes (§4.2, §6.9), HPACK with its table-size rules
    (RFC 7541 §4.2), response fields (§8.2, §8.3.2), content-length (§8.1.1) and the frame layout rules a client can
    see. A violation fails the test at once. With auto_window, every DATA octet is given back at once.
    """

    def __init__(self, relay, local_settings=None, *, auto_window=True):
        self.relay = relay
        context = ssl.create_default_context(cafile=relay.ca)
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", relay.https_port), timeout=TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames go out at once
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.local_settings = {ENABLE_PUSH: 0, **(local_settings or {})}
        self.pending_settings = []  # SETTINGS we sent that the server has not acknowledged yet, oldest first
        self.acked_settings = {}
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.auto_window = auto_window
        self.buffer = b""
        self.frames = []  # every frame received, in order
        self.closed = False
        self.server_settings = {}
        self.server_settings_frames = 0
        self.settings_acks = 0
        self.ping_acks = []
        self.goaways = []  # (last stream id, error code, debug data), in order
        self.streams = {}
        self.next_stream_id = 1
        self.highest_stream_id = 0  # the highest stream id we have sent HEADERS on
        self.field_block_open = None  # (first frame, fragments so far) while a field block is continued
        self.conn_received = 0
        self.conn_updates_sent = 0
        self.conn_sent = 0
        self.conn_updates_received = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    # -- sending

    def send(self, *chunks):
        self.sock.sendall(b"".join(chunks))

    def start(self, preface=PREFACE):
        """The client connection preface and our SETTINGS (§3.4); waits for the server's SETTINGS and its ACK."""
        self.send(preface, self.settings_frame(self.local_settings))
        self.until(lambda: self.server_settings_frames and self.settings_acks, "the server's SETTINGS and ACK")
        return self

    def settings_frame(self, pairs):
        self.pending_settings.append(dict(pairs))
        return settings(pairs)

    def update_settings(self, pairs):
        self.send(self.settings_frame(pairs))

    @property
    def server_max_frame(self):
        return self.server_settings.get(MAX_FRAME_SIZE, DEFAULT_FRAME)

    def stream(self, stream_id):
        if stream_id not in self.streams:
            self.streams[stream_id] = Stream(stream_id)
        return self.streams[stream_id]

    def new_stream_id(self):
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        return stream_id

    def request_fields(self, method, path, headers=()):
        return [(":method", method), (":scheme", "https"), (":authority", self.relay.queue_host), (":path", path),
                *headers]

    def auth(self):
        return [("authorization", f"Key {self.relay.key}")]

    def encode(self, fields):
        return self.encoder.encode(fields)

    def block(self, method="GET", path="/healthz", headers=()):
        """An encoded request field block (for frames built by hand)."""
        return self.encode(self.request_fields(method, path, headers))

    def headers_frame(self, stream_id, block, flags=END_HEADERS | END_STREAM):
        """A HEADERS frame built by hand (the stream counts as used by us)."""
        self.stream(stream_id)
        self.highest_stream_id = max(self.highest_stream_id, stream_id)
        return frame(HEADERS, flags, stream_id, block)

    def send_headers(self, stream_id, fields, end_stream=True, *, split=None):
        """A field block as one HEADERS frame, or HEADERS + CONTINUATIONs of at most `split` octets each."""
        block = self.encode(fields)
        size = split or self.server_max_frame
        pieces = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
        frames = []
        for index, piece in enumerate(pieces):
            flags = END_HEADERS if index == len(pieces) - 1 else 0
            if index == 0:
                frames.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream_id, piece))
            else:
                frames.append(frame(CONTINUATION, flags, stream_id, piece))
        self.stream(stream_id)
        self.highest_stream_id = max(self.highest_stream_id, stream_id)
        self.send(*frames)
        return stream_id

    def request(self, method, path, headers=(), *, end_stream=True, split=None):
        stream_id = self.new_stream_id()
        self.stream(stream_id).head = method == "HEAD"
        return self.send_headers(stream_id, self.request_fields(method, path, headers), end_stream, split=split)

    def send_window(self, stream_id):
        """What we may send on the stream now (§6.9.1): the smaller of its window and the connection's."""
        stream = self.stream(stream_id)
        initial = self.server_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        return min(DEFAULT_WINDOW + self.conn_updates_received - self.conn_sent,
                   initial + stream.updates_received - stream.sent)

    def send_data(self, stream_id, data, end_stream=True):
        """DATA within the server's flow-control windows and frame size, waiting for WINDOW_UPDATEs as needed."""
        stream = self.stream(stream_id)
        view = memoryview(data)
        while True:
            self.until(lambda: self.send_window(stream_id) > 0 or not view or stream.done,
                       f"flow-control credit to send on stream {stream_id}")
            assert not stream.done, f"stream {stream_id} ended while we were sending its body: {stream}"
            size = min(len(view), self.send_window(stream_id), self.server_max_frame)
            last = size == len(view)
            self.send(frame(DATA, END_STREAM if last and end_stream else 0, stream_id, bytes(view[:size])))
            self.conn_sent += size
            stream.sent += size
            view = view[size:]
            if last:
                return

    def grant(self, stream_id, increment):
        """A WINDOW_UPDATE for a stream, or for the connection (stream 0)."""
        self.send(window_update(stream_id, increment))
        if stream_id == 0:
            self.conn_updates_sent += increment
        else:
            self.stream(stream_id).updates_sent += increment

    def cancel(self, stream_id):
        """RST_STREAM (CANCEL) from us: the stream is closed, and gets no more frames from us (§5.1)."""
        self.send(rst_stream(stream_id, CANCEL))
        self.stream(stream_id).reset_sent = True

    # -- receiving

    def read_frame(self, deadline):
        """The next frame, or None at the end of the connection; TimeoutError when none came by the deadline."""
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            if self.closed:
                assert not self.buffer, f"the connection ended inside a frame: {self.buffer[:20]!r}"
                return None
            # Past the deadline, one non-blocking read still takes whatever has already arrived.
            self.sock.settimeout(max(deadline - time.monotonic(), 0.0))
            try:
                chunk = self.sock.recv(65_536)
            except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
                raise TimeoutError from None
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                chunk = b""
            if not chunk:
                self.closed = True
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream = struct.unpack(">BBI", self.buffer[3:9])
        received = Frame(kind, flags, stream & 0x7FFF_FFFF, self.buffer[9:9 + length])
        self.buffer = self.buffer[9 + length:]
        self.frames.append(received)
        self.handle(received)
        return received

    def until(self, condition, what, timeout=TIMEOUT):
        """Reads frames until `condition()` holds; fails when the connection ends or the time is up first."""
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                if self.read_frame(deadline) is None:
                    raise AssertionError(f"the connection closed while waiting for {what}; frames: {self.frames[-8:]}")
            except TimeoutError:
                raise AssertionError(f"no {what} within {timeout} s; last frames: {self.frames[-8:]}") from None

    def until_window_used(self, stream, window):
        """Reads until the server has used all of `window()` for `stream`, or has sent some of it and then stopped (two
        PING round trips without a DATA octet): a server need not fill a window, but with room in one it must make
        progress, and it may never exceed one (checked in data())."""
        start = stream.received
        self.until(lambda: stream.received > start or window() <= 0 or stream.done, f"DATA on stream {stream.id}")
        quiet = 0
        while window() > 0 and not stream.done and quiet < 2:
            before = stream.received
            self.round_trip()
            quiet = quiet + 1 if stream.received == before else 0

    def read_until_closed(self, deadline):
        """Reads up to the end of the connection or the deadline; True when the server closed it."""
        try:
            while self.read_frame(deadline) is not None:
                pass
        except TimeoutError:
            return False
        return True

    def response(self, stream_id, timeout=TIMEOUT):
        stream = self.stream(stream_id)
        self.until(lambda: stream.done, f"the end of stream {stream_id}", timeout)
        return stream

    def get(self, path, headers=(), method="GET"):
        return self.response(self.request(method, path, headers))

    def round_trip(self):
        """A PING and its ACK: whatever the server did for the frames sent before it has arrived by then."""
        opaque = os.urandom(8)
        self.send(ping(opaque))
        failed = lambda: any(code != NO_ERROR for _, code, _ in self.goaways)
        self.until(lambda: opaque in self.ping_acks or failed(), "the PING ACK")
        assert not failed(), f"a GOAWAY instead of the PING ACK: {self.frames[-4:]}"

    def still_serves(self):
        """The connection is usable: no GOAWAY, and a new stream gets its answer."""
        answer = self.get("/healthz")
        assert answer.status == 200 and answer.json() == {"status": "ok"}, answer
        assert not self.goaways, f"GOAWAY: {self.goaways}"

    # -- what the server sends, checked as it arrives

    def handle(self, f):
        if self.field_block_open is not None:
            first, fragments = self.field_block_open
            assert f.type == CONTINUATION and f.stream == first.stream, \
                f"the server sent {f} inside a field block (§6.10)"
            fragments += f.payload
            self.field_block_open = None if f.flags & END_HEADERS else (first, fragments)
            if f.flags & END_HEADERS:
                self.field_block(first, fragments)
            return
        if f.type == SETTINGS:
            assert f.stream == 0, "SETTINGS on a stream (§6.5)"
            if f.flags & ACK:
                assert not f.payload, "a SETTINGS ACK with a payload (§6.5)"
                assert self.pending_settings, "a SETTINGS ACK for nothing we sent (§6.5.3)"
                applied = self.pending_settings.pop(0)
                self.acked_settings.update(applied)
                if HEADER_TABLE_SIZE in applied:
                    # RFC 7541 §4.2: from here the server's encoder must have signalled a size within the new limit;
                    # hpack's decoder checks that after every field block.
                    self.decoder.max_allowed_table_size = applied[HEADER_TABLE_SIZE]
                self.settings_acks += 1
            else:
                assert len(f.payload) % 6 == 0, "a SETTINGS length not a multiple of 6 (§6.5)"
                for offset in range(0, len(f.payload), 6):
                    key, value = struct.unpack(">HI", f.payload[offset:offset + 6])
                    self.server_settings[key] = value
                self.server_settings_frames += 1
                self.send(settings(ack=True))
        elif f.type == PING:
            assert f.stream == 0 and len(f.payload) == 8, f"a malformed PING (§6.7): {f}"
            if f.flags & ACK:
                self.ping_acks.append(f.payload)
            else:
                self.send(ping(f.payload, ack=True))
        elif f.type == GOAWAY:
            assert f.stream == 0 and len(f.payload) >= 8, f"a malformed GOAWAY (§6.8): {f}"
            last, code = struct.unpack(">II", f.payload[:8])
            if self.goaways:
                assert last & 0x7FFF_FFFF <= self.goaways[-1][0], "a GOAWAY raised the last stream id (§6.8)"
            self.goaways.append((last & 0x7FFF_FFFF, code, f.payload[8:]))
        elif f.type == WINDOW_UPDATE:
            assert len(f.payload) == 4, f"a malformed WINDOW_UPDATE (§6.9): {f}"
            increment = struct.unpack(">I", f.payload)[0] & 0x7FFF_FFFF
            assert increment > 0, "a WINDOW_UPDATE of 0 (§6.9)"
            if f.stream == 0:
                self.conn_updates_received += increment
            else:
                self.stream(f.stream).updates_received += increment
        elif f.type == RST_STREAM:
            assert f.stream != 0 and len(f.payload) == 4, f"a malformed RST_STREAM (§6.4): {f}"
            assert f.stream <= max(self.highest_stream_id, 1), f"RST_STREAM on idle stream {f.stream} (§6.4)"
            self.stream(f.stream).reset = struct.unpack(">I", f.payload)[0]
        elif f.type == HEADERS:
            assert f.stream % 2 == 1 and f.stream <= self.highest_stream_id, f"HEADERS on stream {f.stream} (§5.1.1)"
            if f.flags & END_HEADERS:
                self.field_block(f, b"")
            else:
                self.field_block_open = (f, b"")
        elif f.type == DATA:
            self.data(f)
        elif f.type == PUSH_PROMISE:
            raise AssertionError("PUSH_PROMISE although we sent SETTINGS_ENABLE_PUSH = 0 (§6.5.2, §8.4)")
        elif f.type == CONTINUATION:
            raise AssertionError("CONTINUATION without a field block before it (§6.10)")

    def field_block(self, first, more):
        payload = first.payload
        if first.flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        if first.flags & PRIORITY_FLAG:
            payload = payload[5:]
        fields = [(name.decode(), value.decode()) for name, value in self.decoder.decode(payload + more, raw=True)]
        stream = self.stream(first.stream)
        assert not stream.ended, f"HEADERS after END_STREAM on stream {stream.id} (§5.1)"
        if stream.headers is None:
            check_response_fields(fields)
            status = int(dict(fields)[":status"])
            if 100 <= status < 200:
                assert not first.flags & END_STREAM, "an interim response ending the stream (§8.1)"
                stream.informational.append(fields)
            else:
                stream.headers = fields
        else:
            assert first.flags & END_STREAM, "a second field section must be trailers, ending the stream (§8.1)"
            assert not any(name.startswith(":") for name, _ in fields), "a pseudo-header in trailers (§8.1)"
            stream.trailers = fields
        if first.flags & END_STREAM:
            self.end(stream)

    def data(self, f):
        assert f.stream != 0, "DATA on stream 0 (§6.1)"
        stream = self.stream(f.stream)
        assert stream.headers is not None, f"DATA before the response's HEADERS on stream {f.stream} (§8.1)"
        assert not stream.ended, f"DATA after END_STREAM on stream {f.stream} (§5.1)"
        size = len(f.payload)
        # An upper bound on what the server may have had: a SETTINGS change in flight may already apply (§6.9.2).
        initial = max([self.acked_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)] +
                      [pending[INITIAL_WINDOW_SIZE] for pending in self.pending_settings
                       if INITIAL_WINDOW_SIZE in pending])
        stream_window = initial + stream.updates_sent - stream.received
        conn_window = DEFAULT_WINDOW + self.conn_updates_sent - self.conn_received
        assert size <= stream_window, f"{size} octets of DATA on stream {f.stream}, window {stream_window} (§6.9.1)"
        assert size <= conn_window, f"{size} octets of DATA, connection window {conn_window} (§6.9.1)"
        max_frame = max([self.acked_settings.get(MAX_FRAME_SIZE, DEFAULT_FRAME)] +
                        [pending[MAX_FRAME_SIZE] for pending in self.pending_settings if MAX_FRAME_SIZE in pending])
        assert size <= max_frame, f"a {size}-octet frame over our SETTINGS_MAX_FRAME_SIZE (§4.2)"
        stream.received += size
        self.conn_received += size
        payload = f.payload
        if f.flags & PADDED:
            assert payload and payload[0] < len(payload), "padding as long as the frame (§6.1)"
            payload = payload[1:len(payload) - payload[0]]
        stream.body += payload
        if f.flags & END_STREAM:
            self.end(stream)
        if self.auto_window and size:
            self.grant(0, size)
            if not stream.done and not stream.reset_sent:
                self.grant(f.stream, size)

    def end(self, stream):
        stream.ended = True
        length = stream.header("content-length")
        if length is not None and not stream.head and stream.status not in (204, 304):
            assert int(length) == len(stream.body), \
                f"content-length {length} but {len(stream.body)} octets of content (§8.1.1)"


CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


def check_response_fields(fields):
    """§8.2.1 valid fields, §8.2.2 no connection-specific fields, §8.3 pseudo-headers first, §8.3.2 one :status."""
    seen_regular = False
    for name, value in fields:
        assert name and not any(c.isupper() or ord(c) <= 0x20 or ord(c) >= 0x7F for c in name), \
            f"field name {name!r} (§8.2.1)"
        assert not any(c in value for c in "\r\n\0"), f"field value {value!r} (§8.2.1)"
        assert value == value.strip(" \t"), f"field value {value!r} with whitespace at an end (§8.2.1)"
        if name.startswith(":"):
            assert not seen_regular, f"pseudo-header {name} after a regular field (§8.3)"
            assert name == ":status", f"{name} in a response (§8.3.2)"
        else:
            assert ":" not in name, f"field name {name!r} (§8.2.1)"
            seen_regular = True
            assert name not in CONNECTION_SPECIFIC and name != "te", f"connection-specific field {name} (§8.2.2)"
    assert [name for name, _ in fields].count(":status") == 1, "exactly one :status (§8.3.2)"


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay():
    """A relay of this module's own: its connections are abused here, and its slow synthetic jobs (time scale 3,
    ~5 s for flux/dev) keep SSE status streams open long enough to interrupt them."""
    with started_relay("media-relay-h2-conformance-", ("--synthetic-time-scale", "3")) as server:
        yield server


def submit(c, arguments, model="fal-ai/flux/schnell"):
    body = json.dumps(arguments).encode()
    stream_id = c.request("POST", f"/{model}", [("content-type", "application/json"),
                                                 ("content-length", str(len(body))), *c.auth()], end_stream=False)
    c.send_data(stream_id, body)
    answer = c.response(stream_id)
    assert answer.status == 200, (answer, bytes(answer.body))
    return answer.json()


@pytest.fixture(scope="module")
def completed_job(relay):
    """The request id of a finished job, whose result the relay answers from its fast lane."""
    with H2(relay) as c:
        c.start()
        request_id = submit(c, {"prompt": "conformance", "image_size": "square", "seed": 9113})["request_id"]
        stream = c.stream(c.request("GET", f"/fal-ai/flux/requests/{request_id}/status/stream", c.auth()))
        c.until(lambda: b'"COMPLETED"' in stream.body or stream.done, "the job's completion", timeout=30)
        assert b'"COMPLETED"' in stream.body, bytes(stream.body)[-300:]
        return request_id


# --- 1. the connection preface, SETTINGS and PING ---------------------------------------------------------------


def test_preface_settings_and_ping(relay):
    """§3.4: the server's connection preface is a SETTINGS frame, its first frame; §6.5, §6.5.2: its values are
    valid and ours are acknowledged (a later SETTINGS too, and an unknown setting is ignored); §6.7: a PING is
    answered with a PING ACK carrying the same 8 octets, and a PING ACK is not answered."""
    with H2(relay) as c:
        c.start()
        assert c.frames[0].type == SETTINGS and not c.frames[0].flags & ACK, c.frames[:3]
        server = c.server_settings
        assert server.get(ENABLE_PUSH, 0) == 0, "a server MUST NOT set SETTINGS_ENABLE_PUSH to 1 (§6.5.2)"
        assert server.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW) <= MAX_WINDOW
        assert DEFAULT_FRAME <= server.get(MAX_FRAME_SIZE, DEFAULT_FRAME) <= 2**24 - 1
        assert c.settings_acks == 1

        c.update_settings({0xF0F0: 7, MAX_HEADER_LIST_SIZE: 65_536})
        c.until(lambda: c.settings_acks == 2, "the ACK of a second SETTINGS")

        unanswered = b"ack-only"
        c.send(ping(unanswered, ack=True))
        opaque = b"\x00\x01\x02\x03\xfc\xfd\xfe\xff"
        c.send(ping(opaque))
        c.until(lambda: c.ping_acks, "the PING ACK")
        assert c.ping_acks == [opaque]
        c.round_trip()
        assert not [f for f in c.frames if f.type == PING and f.payload == unanswered], "a PING ACK was answered"
        c.still_serves()


# --- 2. requests and many streams -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/ui/style.css"])
def test_get_and_head(relay, path):
    """§8.1: a GET is answered with HEADERS and DATA ending the stream; a HEAD with the same fields and no content
    (§8.1.1: content-length, here present, counts what a GET would carry). /healthz and a static asset take
    different paths through the relay."""
    with H2(relay) as c:
        c.start()
        got = c.get(path)
        assert got.status == 200 and got.ended and len(got.body) > 0
        head = c.get(path, method="HEAD")
        assert head.status == 200 and head.ended
        assert bytes(head.body) == b"" and sum(len(f.payload) for f in c.frames
                                               if f.type == DATA and f.stream == head.id) == 0
        assert head.header("content-length") is not None, head.headers
        assert int(head.header("content-length")) == len(got.body)


def test_fifty_concurrent_streams_on_one_connection(relay):
    """§5.1.2, §5.2: 50 requests sent at once, each on its own stream, are all answered on the one connection."""
    paths = ["/healthz", "/ui/icon.svg"]
    with H2(relay) as c:
        c.start()
        streams = [c.stream(c.request("GET", paths[i % 2])) for i in range(50)]
        c.until(lambda: all(s.done for s in streams), "50 answers")
        assert [s.status for s in streams] == [200] * 50, streams
        assert {bytes(s.body) for s in streams[0::2]} == {b'{"status":"ok"}'}
        assert len({bytes(s.body) for s in streams[1::2]}) == 1 and b"<svg" in streams[1].body
        assert not c.goaways


# --- 3. CONTINUATION and padding --------------------------------------------------------------------------------


def test_field_block_in_headers_and_continuations(relay):
    """§4.3, §6.10: a field block split over HEADERS and two CONTINUATION frames is one request."""
    with H2(relay) as c:
        c.start()
        padding = [(f"x-pad-{i}", "v" * 60) for i in range(24)]  # ~2 KB of fields
        block = c.block("GET", "/healthz", padding)
        third = len(block) // 3
        stream_id = c.new_stream_id()
        c.send(c.headers_frame(stream_id, block[:third], END_STREAM),
               frame(CONTINUATION, 0, stream_id, block[third:2 * third]),
               frame(CONTINUATION, END_HEADERS, stream_id, block[2 * third:]))
        answer = c.response(stream_id)
        assert answer.status == 200 and answer.json() == {"status": "ok"}


def test_padded_headers_and_data(relay):
    """§6.1, §6.2: padding (and a HEADERS frame's priority fields, §6.2) is stripped: the request is read as sent."""
    with H2(relay) as c:
        c.start()
        body = json.dumps({"prompt": "padded", "image_size": "square", "seed": 61}).encode()
        block = c.block("POST", "/fal-ai/flux/schnell", [("content-type", "application/json"), *c.auth()])
        stream_id = c.new_stream_id()
        c.send(c.headers_frame(stream_id, bytes([7]) + struct.pack(">IB", 0, 200) + block + bytes(7),
                               END_HEADERS | PADDED | PRIORITY_FLAG),
               frame(DATA, PADDED, stream_id, bytes([3]) + body[:10] + bytes(3)),
               frame(DATA, END_STREAM | PADDED, stream_id, bytes([0]) + body[10:]))
        answer = c.response(stream_id)
        assert answer.status == 200, bytes(answer.body)
        assert "request_id" in answer.json()


# --- 4. connection errors ---------------------------------------------------------------------------------------


class ConnectionErrorCase:
    def __init__(self, case_id, codes, provoke, *, handshake=True, goaway_optional=False):
        self.id, self.codes, self.provoke = case_id, codes, provoke
        self.handshake, self.goaway_optional = handshake, goaway_optional


def open_post(c):
    """A POST whose body has not been sent: its stream stays open."""
    return c.request("POST", "/fal-ai/flux/schnell", [("content-type", "application/json"), *c.auth()],
                     end_stream=False)


def get_then(c, stream_id, make_frame):
    """A GET answered on `stream_id`, then the frame `make_frame()` builds (after: HPACK state is ordered)."""
    c.next_stream_id = stream_id
    c.get("/healthz")
    c.send(make_frame())


def window_past_max_by_settings(c):
    stream_id = open_post(c)
    c.send(window_update(stream_id, MAX_WINDOW - c.local_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)))
    c.round_trip()  # the stream's window is now exactly 2^31-1: legal
    c.send(c.settings_frame({INITIAL_WINDOW_SIZE: DEFAULT_WINDOW + 1}))  # +1 for every stream: one over


C = ConnectionErrorCase
CONNECTION_ERRORS = [
    # §3.4: an invalid connection preface; "a GOAWAY frame MAY be omitted in this case".
    C("3.4-invalid-preface", {PROTOCOL_ERROR}, lambda c: c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", settings()),
      handshake=False, goaway_optional=True),
    C("3.4-http1-request-as-preface", {PROTOCOL_ERROR},
      lambda c: c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), handshake=False, goaway_optional=True),
    C("3.4-first-frame-not-settings", {PROTOCOL_ERROR}, lambda c: c.send(PREFACE, ping()),
      handshake=False, goaway_optional=True),
    # §4.2: a frame carrying a field block over SETTINGS_MAX_FRAME_SIZE is a connection error.
    C("4.2-headers-over-max-frame-size", {FRAME_SIZE_ERROR},
      lambda c: c.send(c.headers_frame(1, c.block() + b"\x00" * c.server_max_frame))),
    # §4.3 / RFC 7541: HPACK decoding errors.
    C("4.3-hpack-index-0", {COMPRESSION_ERROR}, lambda c: c.send(c.headers_frame(1, b"\x80"))),
    C("4.3-hpack-index-past-both-tables", {COMPRESSION_ERROR},
      lambda c: c.send(c.headers_frame(1, b"\xff\x80\x80\x80\x08"))),
    C("4.3-hpack-table-size-update-over-setting", {COMPRESSION_ERROR},
      lambda c: c.send(c.headers_frame(1, b"\x3f\xe1\x3f" + c.block()))),  # 8192 > the server's 4096 (RFC 7541 §6.3)
    C("4.3-hpack-table-size-update-after-a-field", {COMPRESSION_ERROR},
      lambda c: c.send(c.headers_frame(1, c.block() + b"\x20"))),  # RFC 7541 §4.2: only at the start of a block
    C("4.3-hpack-truncated-literal", {COMPRESSION_ERROR}, lambda c: c.send(c.headers_frame(1, b"\x40\x05ab"))),
    # §5.1, §5.1.1: stream states and identifiers.
    C("5.1.1-headers-on-even-stream", {PROTOCOL_ERROR}, lambda c: c.send(c.headers_frame(2, c.block()))),
    C("5.1.1-stream-id-going-backwards", {PROTOCOL_ERROR},
      lambda c: get_then(c, 5, lambda: c.headers_frame(3, c.block()))),
    C("5.1-headers-on-a-closed-stream", {PROTOCOL_ERROR, STREAM_CLOSED},
      lambda c: get_then(c, 1, lambda: c.headers_frame(1, c.block()))),
    C("5.1-data-on-an-idle-stream", {PROTOCOL_ERROR}, lambda c: c.send(frame(DATA, END_STREAM, 1, b"{}"))),
    # §5.5, §6.10: a field block is contiguous.
    C("5.5-unknown-frame-inside-a-field-block", {PROTOCOL_ERROR}, lambda c: c.send(
        c.headers_frame(1, c.block()[:3], END_STREAM), frame(UNKNOWN_TYPE, 0, 1, b"x"),
        frame(CONTINUATION, END_HEADERS, 1))),
    C("6.10-ping-inside-a-field-block", {PROTOCOL_ERROR}, lambda c: c.send(
        c.headers_frame(1, c.block()[:3], END_STREAM), ping(), frame(CONTINUATION, END_HEADERS, 1))),
    C("6.10-continuation-on-another-stream", {PROTOCOL_ERROR}, lambda c: c.send(
        c.headers_frame(1, c.block()[:3], END_STREAM), frame(CONTINUATION, END_HEADERS, 3))),
    C("6.10-continuation-without-headers", {PROTOCOL_ERROR},
      lambda c: c.send(frame(CONTINUATION, END_HEADERS, 1, c.block()))),
    # §6.1-§6.9: frame-specific rules.
    C("6.1-data-on-stream-0", {PROTOCOL_ERROR}, lambda c: c.send(frame(DATA, 0, 0, b"x"))),
    C("6.1-data-padding-as-long-as-the-frame", {PROTOCOL_ERROR},
      lambda c: (open_post(c), c.send(frame(DATA, END_STREAM | PADDED, 1, bytes([4]) + b"abc")))),
    C("6.2-headers-on-stream-0", {PROTOCOL_ERROR}, lambda c: c.send(c.headers_frame(0, c.block()))),
    C("6.2-headers-padding-longer-than-the-frame", {PROTOCOL_ERROR},
      lambda c: c.send(c.headers_frame(1, bytes([200]) + c.block(), END_HEADERS | END_STREAM | PADDED))),
    C("6.3-priority-on-stream-0", {PROTOCOL_ERROR}, lambda c: c.send(priority(0, 1))),
    C("6.4-rst-stream-on-stream-0", {PROTOCOL_ERROR}, lambda c: c.send(rst_stream(0, CANCEL))),
    C("6.4-rst-stream-on-an-idle-stream", {PROTOCOL_ERROR}, lambda c: c.send(rst_stream(1, CANCEL))),
    C("6.4-rst-stream-of-length-3", {FRAME_SIZE_ERROR},
      lambda c: (open_post(c), c.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x08")))),
    C("6.5-settings-ack-with-a-payload", {FRAME_SIZE_ERROR},
      lambda c: c.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", MAX_CONCURRENT_STREAMS, 10)))),
    C("6.5-settings-length-not-a-multiple-of-6", {FRAME_SIZE_ERROR},
      lambda c: c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", MAX_CONCURRENT_STREAMS, 10) + b"\x00"))),
    C("6.5-settings-on-a-stream", {PROTOCOL_ERROR}, lambda c: c.send(frame(SETTINGS, 0, 1))),
    C("6.5.2-enable-push-2", {PROTOCOL_ERROR}, lambda c: c.send(c.settings_frame({ENABLE_PUSH: 2}))),
    C("6.5.2-initial-window-size-over-2^31-1", {FLOW_CONTROL_ERROR},
      lambda c: c.send(c.settings_frame({INITIAL_WINDOW_SIZE: 2**31}))),
    C("6.5.2-max-frame-size-below-16384", {PROTOCOL_ERROR},
      lambda c: c.send(c.settings_frame({MAX_FRAME_SIZE: 16_383}))),
    C("6.5.2-max-frame-size-above-2^24-1", {PROTOCOL_ERROR},
      lambda c: c.send(c.settings_frame({MAX_FRAME_SIZE: 2**24}))),
    C("6.7-ping-of-length-7", {FRAME_SIZE_ERROR}, lambda c: c.send(frame(PING, 0, 0, b"1234567"))),
    C("6.7-ping-on-a-stream", {PROTOCOL_ERROR}, lambda c: c.send(frame(PING, 0, 1, b"12345678"))),
    C("6.8-goaway-on-a-stream", {PROTOCOL_ERROR}, lambda c: c.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))),
    C("6.9-window-update-of-0-on-the-connection", {PROTOCOL_ERROR}, lambda c: c.send(window_update(0, 0))),
    C("6.9-window-update-of-length-3", {FRAME_SIZE_ERROR}, lambda c: c.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"))),
    C("6.9.1-window-update-past-2^31-1-on-the-connection", {FLOW_CONTROL_ERROR},
      lambda c: c.send(window_update(0, MAX_WINDOW))),
    C("6.9.2-initial-window-size-change-past-2^31-1", {FLOW_CONTROL_ERROR}, window_past_max_by_settings),
    # §8.4: "A client cannot push."
    C("8.4-push-promise-from-the-client", {PROTOCOL_ERROR}, lambda c: (open_post(c), c.send(
        frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block())))),
]


@pytest.fixture(scope="module")
def connection_errors(relay):
    """Every case in CONNECTION_ERRORS provoked on a connection of its own, then all read to their end side by side
    under one deadline, so that a server which leaves connections open costs one TIMEOUT, not one per case."""
    connections = {}
    outcomes = {}
    try:
        for case in CONNECTION_ERRORS:
            c = connections[case.id] = H2(relay)
            try:
                if case.handshake:
                    c.start()
                case.provoke(c)
            except (AssertionError, OSError) as error:
                outcomes[case.id] = f"provoking failed: {error}"
        deadline = time.monotonic() + TIMEOUT
        waiting = dict(connections)
        while waiting:
            for case_id, c in list(waiting.items()):
                try:
                    if c.read_until_closed(time.monotonic()):  # what has arrived, without blocking
                        del waiting[case_id]
                except AssertionError as error:
                    outcomes.setdefault(case_id, f"the server's frames broke the rules: {error}")
                    del waiting[case_id]
            if not waiting or time.monotonic() >= deadline:
                break
            select.select([c.sock for c in waiting.values()], [], [], deadline - time.monotonic())
        yield outcomes, connections
    finally:
        for c in connections.values():
            c.sock.close()


def case_params(cases):
    return [pytest.param(case, id=case.id) for case in cases]


@pytest.mark.parametrize("case", case_params(CONNECTION_ERRORS))
def test_connection_error_is_answered_with_goaway(connection_errors, case):
    """§5.4.1: a connection error is answered with GOAWAY carrying the error code the section named in the case id
    requires (§3.4 lets a server omit the GOAWAY after an invalid preface; then it must just close)."""
    outcomes, connections = connection_errors
    assert case.id not in outcomes, outcomes[case.id]
    c = connections[case.id]
    if not c.goaways and case.goaway_optional:
        assert c.closed, "no GOAWAY, and the connection stayed open"
        return
    assert c.goaways, f"no GOAWAY; frames: {c.frames}"
    codes = {code for _, code, _ in c.goaways}
    assert codes <= case.codes, f"GOAWAY with {[error_name(code) for code in codes]}, " \
                                f"expected {[error_name(code) for code in case.codes]}"
    assert not [f for f in c.frames if f.type in (HEADERS, DATA) and f.stream > c.goaways[0][0]], \
        "frames on a stream after the GOAWAY's last stream id"


@pytest.mark.parametrize("case", case_params(CONNECTION_ERRORS))
def test_connection_error_closes_the_connection(connection_errors, case):
    """§5.4.1: "After sending the GOAWAY frame for an error condition, the endpoint MUST close the TCP connection"
    (within TIMEOUT here; an invalid preface, §3.4, too)."""
    outcomes, connections = connection_errors
    assert case.id not in outcomes, outcomes[case.id]
    assert connections[case.id].closed, f"still open {TIMEOUT} s after {connections[case.id].frames[-2:]}"


@pytest.mark.parametrize("case", case_params([case for case in CONNECTION_ERRORS if not case.goaway_optional]))
def test_connection_error_goaway_names_the_last_stream_processed(connection_errors, case):
    """§5.4.1 (SHOULD), §6.8: the GOAWAY of a connection error names the last stream the server received from the
    client, so the client knows which requests it may retry: no higher than the highest stream the client opened."""
    outcomes, connections = connection_errors
    assert case.id not in outcomes, outcomes[case.id]
    c = connections[case.id]
    assert c.goaways, "no GOAWAY"
    assert c.goaways[-1][0] <= c.highest_stream_id, \
        f"last stream id {c.goaways[-1][0]}, but the client opened none above {c.highest_stream_id}"


# --- 5. stream errors -------------------------------------------------------------------------------------------


class StreamErrorCase:
    def __init__(self, case_id, codes, provoke, *, malformed=False):
        """`malformed`: the request itself is malformed (§8.1.1), so no successful response may come before the
        RST_STREAM; otherwise the error is in a later frame of a valid request."""
        self.id, self.codes, self.provoke, self.malformed = case_id, codes, provoke, malformed


def fields_case(case_id, edit, codes=frozenset({PROTOCOL_ERROR})):
    """A GET /healthz whose field list `edit` turns malformed."""
    def provoke(c):
        stream_id = c.new_stream_id()
        return c.send_headers(stream_id, edit(c.request_fields("GET", "/healthz")))
    return StreamErrorCase(case_id, codes, provoke, malformed=True)


def without(name):
    return lambda fields: [(k, v) for k, v in fields if k != name]


def adding(*extra):
    return lambda fields: fields + list(extra)


def post_with_content_length(declared, actual):
    def provoke(c):
        stream_id = c.request("POST", "/fal-ai/flux/schnell", [("content-type", "application/json"),
                                                                ("content-length", str(declared)), *c.auth()],
                              end_stream=actual == 0)
        if actual:
            c.send(frame(DATA, END_STREAM, stream_id, b"{" + b" " * (actual - 2) + b"}"))
        return stream_id
    return provoke


def post_then_headers(fields, end_stream):
    def provoke(c):
        stream_id = open_post(c)
        c.send(frame(DATA, 0, stream_id, b'{"prompt": "x"}'))
        c.send_headers(stream_id, fields, end_stream)
        return stream_id
    return provoke


def data_on_half_closed_stream(c):
    stream_id = c.request("GET", "/relay/stats/stream")  # END_STREAM: half-closed (remote) at the server
    stream = c.stream(stream_id)
    c.until(lambda: stream.headers is not None, "the SSE response's HEADERS")
    c.send(frame(DATA, END_STREAM, stream_id, b"late"))
    return stream_id


def with_open_post(*frames_for):
    def provoke(c):
        stream_id = open_post(c)
        c.send(*[make(stream_id) for make in frames_for])
        return stream_id
    return provoke


S = StreamErrorCase
PROTOCOL = frozenset({PROTOCOL_ERROR})
STREAM_ERRORS = [
    # §8.3.1: the mandatory request pseudo-headers, exactly once, :path not empty.
    fields_case("8.3.1-missing-path", without(":path")),
    fields_case("8.3.1-missing-method", without(":method")),
    fields_case("8.3.1-missing-scheme", without(":scheme")),
    fields_case("8.3.1-empty-path", lambda f: [(k, "" if k == ":path" else v) for k, v in f]),
    fields_case("8.3.1-two-paths", adding((":path", "/healthz"))),
    # §8.3: only defined request pseudo-headers, all before the regular fields.
    fields_case("8.3-unknown-pseudo-header", adding((":foo", "bar"))),
    fields_case("8.3-response-pseudo-header-in-a-request", adding((":status", "200"))),
    fields_case("8.3-pseudo-header-after-a-regular-field", lambda f: f[:2] + [("x-early", "1")] + f[2:]),
    # §8.5: CONNECT carries neither :scheme nor :path.
    fields_case("8.5-connect-with-scheme-and-path", lambda f: [(k, "CONNECT" if k == ":method" else v) for k, v in f]),
    # §8.2.1: field validity.
    fields_case("8.2.1-uppercase-field-name", adding(("X-Upper", "1"))),
    fields_case("8.2.1-space-in-field-name", adding(("x upper", "1"))),
    fields_case("8.2.1-colon-in-field-name", adding(("x:upper", "1"))),
    fields_case("8.2.1-crlf-in-field-value", adding(("x-value", "a\r\nx-injected: 1"))),
    fields_case("8.2.1-nul-in-field-value", adding(("x-value", "a\0b"))),
    fields_case("8.2.1-field-value-starting-with-space", adding(("x-value", " a"))),
    fields_case("8.2.1-field-value-ending-with-tab", adding(("x-value", "a\t"))),
    # §8.2.2: connection-specific fields; TE only as "trailers".
    fields_case("8.2.2-connection", adding(("connection", "keep-alive"))),
    fields_case("8.2.2-keep-alive", adding(("keep-alive", "timeout=5"))),
    fields_case("8.2.2-proxy-connection", adding(("proxy-connection", "keep-alive"))),
    fields_case("8.2.2-transfer-encoding", adding(("transfer-encoding", "chunked"))),
    fields_case("8.2.2-upgrade", adding(("upgrade", "h2c"))),
    fields_case("8.2.2-te-gzip", adding(("te", "gzip"))),
    fields_case("8.1.1-content-length-with-a-sign", adding(("content-length", "+0"))),
    # §8.1.1: content-length must equal the DATA received.
    S("8.1.1-content-length-above-the-data", PROTOCOL, post_with_content_length(20, 10), malformed=True),
    S("8.1.1-content-length-below-the-data", PROTOCOL, post_with_content_length(10, 20), malformed=True),
    S("8.1.1-content-length-without-data", PROTOCOL, post_with_content_length(5, 0), malformed=True),
    # §8.1: trailers end the stream and carry no pseudo-headers.
    S("8.1-pseudo-header-in-trailers", PROTOCOL, post_then_headers([(":path", "/healthz")], True), malformed=True),
    S("8.1-second-headers-without-end-stream", PROTOCOL, post_then_headers([("x-trailer", "1")], False),
      malformed=True),
    # §5.1: half-closed (remote) takes no more DATA.
    S("5.1-data-on-a-half-closed-stream", frozenset({STREAM_CLOSED}), data_on_half_closed_stream),
    # §6.3, §6.9, §6.9.1: frame rules scoped to a stream.
    S("6.3-priority-of-length-4", frozenset({FRAME_SIZE_ERROR}),
      with_open_post(lambda s: frame(PRIORITY, 0, s, b"\0\0\0\0"))),
    S("5.3.1-priority-depending-on-itself", PROTOCOL,
      with_open_post(lambda s: frame(PRIORITY, 0, s, struct.pack(">IB", s, 15)))),
    S("6.9-window-update-of-0-on-a-stream", PROTOCOL, with_open_post(lambda s: window_update(s, 0))),
    S("6.9.1-window-update-past-2^31-1-on-a-stream", frozenset({FLOW_CONTROL_ERROR}),
      with_open_post(lambda s: window_update(s, MAX_WINDOW))),
]


@pytest.mark.parametrize("case", case_params(STREAM_ERRORS))
def test_stream_error_is_answered_with_rst_stream(relay, case):
    """§5.4.2: a stream error is answered with RST_STREAM carrying the code the section named in the case id requires
    (§8.1.1: malformed requests are PROTOCOL_ERROR; a response MAY come before the reset), and the connection stays
    usable: no GOAWAY, and a new stream is answered."""
    with H2(relay) as c:
        c.start()
        stream = c.stream(case.provoke(c))
        c.until(lambda: stream.reset is not None or stream.ended or c.goaways, f"an answer on stream {stream.id}")
        assert not c.goaways, f"a connection error instead of a stream error: {c.frames[-4:]}"
        c.round_trip()  # a RST_STREAM after a response has arrived by now
        assert stream.reset is not None, f"no RST_STREAM: {stream}, {bytes(stream.body)[:200]}"
        assert stream.reset in case.codes, \
            f"RST_STREAM {error_name(stream.reset)}, expected {[error_name(code) for code in case.codes]}"
        if case.malformed and stream.status is not None:
            assert stream.status >= 400, f"a malformed request must not succeed: {stream}"
        c.still_serves()


def test_valid_request_fields_are_accepted(relay):
    """§8.2.2: "te: trailers" is allowed; §8.2.1: an empty value, inner whitespace and visible punctuation in names
    are valid; §8.2.3: the cookie field may be split over several field lines."""
    with H2(relay) as c:
        c.start()
        answer = c.get("/healthz", [("te", "trailers"), ("x-empty", ""), ("x-inner", "a b\tc"),
                                    ("x-punct!#$%&'*+-.^_`|~", "1"), ("cookie", "a=b"), ("cookie", "c=d")])
        assert answer.status == 200 and answer.json() == {"status": "ok"}
        c.still_serves()


# --- 6. the concurrency limit -----------------------------------------------------------------------------------


def test_streams_over_max_concurrent_streams_are_refused(relay):
    """§5.1.2: a HEADERS frame that takes the client over the server's SETTINGS_MAX_CONCURRENT_STREAMS is a stream
    error of type REFUSED_STREAM or PROTOCOL_ERROR, and no stream within the limit is refused; once the open streams
    are closed, new streams are served. (Open and half-closed streams count; a stream the server has reset no longer
    does, so a server that answers and resets early may accept as many more.)"""
    refusals = (REFUSED_STREAM, PROTOCOL_ERROR)
    with H2(relay) as c:
        c.start()
        limit = c.server_settings.get(MAX_CONCURRENT_STREAMS)
        if limit is None or limit > 1000:
            pytest.skip(f"SETTINGS_MAX_CONCURRENT_STREAMS is {limit}")
        fields = [("content-type", "application/json"), ("content-length", "100"), *c.auth()]
        ids = [c.new_stream_id() for _ in range(limit + 3)]
        # All at once, without waiting: POSTs without END_STREAM or body stay open until we end them.
        c.send(*[c.headers_frame(stream_id, c.block("POST", "/fal-ai/flux/schnell", fields), END_HEADERS)
                 for stream_id in ids])
        c.round_trip()
        assert not c.goaways, f"a connection error instead of a stream error: {c.goaways}"
        within, over = [c.stream(i) for i in ids[:limit]], [c.stream(i) for i in ids[limit:]]
        assert [s for s in within if s.reset in refusals] == [], "a stream within the limit was refused"
        freed = len([s for s in within if s.reset is not None])
        accepted = [s for s in over if s.reset not in refusals]
        assert len(accepted) <= freed, f"{len(accepted)} streams over the limit of {limit} accepted: {accepted}"
        for s in within + over:
            if s.reset is None:
                c.cancel(s.id)
        c.still_serves()


# --- 7. flow control on responses -------------------------------------------------------------------------------


def read_with_small_grants(c, stream):
    """Lets the server use the stream's window, then grants more (doubling from 16 octets), to the end of the stream.
    The DATA check in H2 fails any frame beyond a window."""
    grant = 16
    window = lambda: c.acked_settings[INITIAL_WINDOW_SIZE] + stream.updates_sent - stream.received
    while True:
        c.until_window_used(stream, window)
        if stream.done:
            return
        c.grant(stream.id, grant)
        c.grant(0, grant)
        grant *= 2


@pytest.fixture(params=["static asset", "fast-lane result"])
def response_over_16_octets(request, relay):
    """A path whose answer is well over 16 octets, through either of the relay's answering paths."""
    if request.param == "static asset":
        return "/ui/playground.js", ()
    request_id = request.getfixturevalue("completed_job")
    return f"/fal-ai/flux/requests/{request_id}", (("authorization", f"Key {relay.key}"),)


def test_response_waits_for_window_updates(relay, response_over_16_octets):
    """§6.9.1, §6.9.2: with SETTINGS_INITIAL_WINDOW_SIZE 16 the server sends at most 16 octets, then only as much as
    each WINDOW_UPDATE allows (never more than the window, at any point); the whole body arrives intact."""
    path, fields = response_over_16_octets
    with H2(relay) as reference:
        expected = bytes(reference.start().get(path, fields).body)
    assert len(expected) > 64
    with H2(relay, {INITIAL_WINDOW_SIZE: 16}, auto_window=False) as c:
        c.start()
        stream = c.stream(c.request("GET", path, fields))
        read_with_small_grants(c, stream)
        assert stream.status == 200 and bytes(stream.body) == expected
        assert stream.updates_sent >= len(expected) - 16


def test_a_431_waits_for_the_window_like_any_answer(relay):
    """§6.9.1 and the relay's head limit: a request head over max_header_bytes is answered 431 in fal's error shape,
    its body sent as the client's window allows (here 16 octets at a time), whole; the request's stream then ends."""
    with H2(relay, {INITIAL_WINDOW_SIZE: 16}, auto_window=False) as c:
        c.start()
        stream = c.stream(c.request("GET", "/healthz", [("x-big", "a" * 40_000)]))
        read_with_small_grants(c, stream)
        assert stream.status == 431
        assert "32768" in json.loads(bytes(stream.body))["detail"]
        assert c.get("/healthz").status == 200


def test_raising_initial_window_size_unblocks_a_stream(relay):
    """§6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE change applies to open streams by the difference: a stream stalled on
    a 16-octet window continues when the client raises the setting, without any WINDOW_UPDATE."""
    with H2(relay) as reference:
        expected = bytes(reference.start().get("/ui/playground.js").body)
    with H2(relay, {INITIAL_WINDOW_SIZE: 16}, auto_window=False) as c:
        c.start()
        stream = c.stream(c.request("GET", "/ui/playground.js"))
        c.until_window_used(stream, lambda: 16 - stream.received)
        assert not stream.done
        c.update_settings({INITIAL_WINDOW_SIZE: len(expected)})
        c.response(stream.id)
        assert bytes(stream.body) == expected
        assert c.settings_acks == 2 and c.conn_updates_sent == 0 and stream.updates_sent == 0


def test_connection_window_limits_all_streams(relay):
    """§6.9, §6.9.2: the connection window (65,535, changed only by WINDOW_UPDATE on stream 0) caps a response even
    when the stream's window is large; it resumes on a connection WINDOW_UPDATE."""
    data = os.urandom(150_000)
    with H2(relay) as c:
        upload = c.start().stream(c.request("POST", "/files/upload", [("content-type", "image/png"), *c.auth()],
                                            end_stream=False))
        c.send_data(upload.id, data)
        path = "/files/" + c.response(upload.id).json()["access_url"].rsplit("/files/", 1)[1]
    with H2(relay, {INITIAL_WINDOW_SIZE: 1 << 20}, auto_window=False) as c:
        c.start()
        stream = c.stream(c.request("GET", path))
        c.until_window_used(stream, lambda: DEFAULT_WINDOW - c.conn_received)
        assert not stream.done and 0 < stream.received <= DEFAULT_WINDOW
        c.grant(0, len(data))
        c.response(stream.id)
        assert stream.status == 200 and bytes(stream.body) == data


# --- 8. flow control on requests --------------------------------------------------------------------------------


def test_large_request_body_gets_window_updates(relay):
    """§6.9, §5.2.1: a 300 KB upload exceeds the initial 65,535-octet windows; the server must give credit back with
    WINDOW_UPDATE on the connection (and on the stream when its window is smaller than the body), and the bytes it
    stores are the bytes sent (read back over the same connection)."""
    data = os.urandom(300_000)
    with H2(relay) as c:
        c.start()
        stream_id = c.request("POST", "/files/upload", [("content-type", "image/png"),
                                                         ("content-length", str(len(data))), *c.auth()],
                              end_stream=False)
        c.send_data(stream_id, data)
        answer = c.response(stream_id)
        assert answer.status == 200, bytes(answer.body)
        assert answer.json()["file_size"] == len(data)
        assert c.conn_updates_received >= len(data) - DEFAULT_WINDOW
        if c.server_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW) < len(data):
            assert answer.updates_received >= len(data) - c.server_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        stored = c.get("/files/" + answer.json()["access_url"].rsplit("/files/", 1)[1])
        assert stored.status == 200 and bytes(stored.body) == data


# --- 9. RST_STREAM from the client ------------------------------------------------------------------------------


def test_client_reset_of_an_sse_status_stream(relay):
    """§5.4.2, §6.4: the client resets an SSE status stream mid-job; the server does not answer the RST_STREAM with
    one of its own ("MUST NOT"), and the connection carries on: a new stream is answered, and a new status stream for
    the same job gets its events."""
    with H2(relay) as c:
        c.start()
        job = submit(c, {"prompt": "interrupted", "seed": 4242}, model="fal-ai/flux/dev")
        path = f"/fal-ai/flux/requests/{job['request_id']}/status/stream?logs=1"
        stream = c.stream(c.request("GET", path, c.auth()))
        c.until(lambda: b"data:" in stream.body, "the first SSE event")
        assert not stream.done
        c.cancel(stream.id)
        c.round_trip()
        assert stream.reset is None, "the server answered RST_STREAM with RST_STREAM"
        c.still_serves()
        again = c.stream(c.request("GET", path, c.auth()))
        c.until(lambda: b"data:" in again.body, "an event on a new status stream")
        c.cancel(again.id)
        c.round_trip()
        assert not c.goaways


# --- 10. HPACK --------------------------------------------------------------------------------------------------


def test_header_table_size_0(relay):
    """RFC 7541 §4.2, RFC 9113 §6.5.2: after SETTINGS_HEADER_TABLE_SIZE 0 is acknowledged, the server's encoder
    signals a table of size 0 and never indexes: every response decodes with a decoder allowed no dynamic table."""
    with H2(relay, {HEADER_TABLE_SIZE: 0}) as c:
        c.start()
        for path in ["/healthz", "/ui/style.css", "/healthz", "/", "/healthz"]:
            assert c.get(path).status == 200
        assert c.decoder.header_table_size == 0
        assert len(c.decoder.header_table.dynamic_entries) == 0


def test_dynamic_tables_over_twenty_requests(relay):
    """RFC 7541 §2.3, §4: with the default 4,096-octet dynamic tables, 20 requests in a row decode on both sides (our
    encoder indexes the repeated fields, so the server's decoder must keep its table in step, and its encoder may
    index too); a dynamic table size update from the client (§6.3) is honoured mid-connection."""
    with H2(relay) as c:
        c.start()
        for i in range(20):
            path = ["/healthz", "/ui/icon.svg", "/"][i % 3]
            answer = c.get(path, [("x-request-number", str(i)), ("x-same", "same on every request"), *c.auth()])
            assert answer.status == 200, (i, answer)
        c.encoder.header_table_size = 64  # the next block starts with a size update
        assert c.get("/healthz", [("x-after-resize", "1")]).status == 200
        c.encoder.header_table_size = 4096
        for _ in range(3):
            assert c.get("/healthz", [("x-same", "same on every request")]).status == 200


# --- 11. frames to ignore ---------------------------------------------------------------------------------------


def test_unknown_frames_priority_and_late_window_updates_are_ignored(relay):
    """§4.1, §5.5: frames of unknown type are ignored (on stream 0 and inside a request's body); §6.3: PRIORITY is
    accepted on idle and closed streams and in HEADERS; §6.5.2: unknown settings are ignored; §6.9: WINDOW_UPDATE on
    a closed stream is not an error."""
    with H2(relay) as c:
        c.start()
        done = c.get("/healthz")
        c.send(frame(UNKNOWN_TYPE, 0xFF, 0, b"extension payload"),
               priority(done.id, 0, 100),  # closed
               window_update(done.id, 1000),  # closed
               priority(c.next_stream_id + 2, 0, 100),  # idle, and not opened by it
               c.settings_frame({0x7777: 1}))
        stream_id = c.new_stream_id()
        c.send(c.headers_frame(stream_id, struct.pack(">IB", done.id, 42) + c.block(),
                               END_HEADERS | END_STREAM | PRIORITY_FLAG))
        assert c.response(stream_id).status == 200

        body = json.dumps({"prompt": "with an extension frame", "image_size": "square", "seed": 55}).encode()
        stream_id = open_post(c)
        c.send(frame(DATA, 0, stream_id, body[:5]), frame(UNKNOWN_TYPE, 0, stream_id, b"ignored"),
               frame(DATA, END_STREAM, stream_id, body[5:]))
        answer = c.response(stream_id)
        assert answer.status == 200 and "request_id" in answer.json()
        c.still_serves()
        assert c.settings_acks == 2


# --- 12. trailers -----------------------------------------------------------------------------------------------


def test_request_trailers(relay):
    """§8.1: a request is HEADERS, DATA, then a trailer section in HEADERS with END_STREAM; the request is served."""
    with H2(relay) as c:
        c.start()
        body = json.dumps({"prompt": "with trailers", "image_size": "square", "seed": 12}).encode()
        stream_id = c.request("POST", "/fal-ai/flux/schnell", [("content-type", "application/json"), *c.auth()],
                              end_stream=False)
        c.send_data(stream_id, body, end_stream=False)
        c.send_headers(stream_id, [("x-checksum", "abc123"), ("x-trailer-two", "2")], end_stream=True)
        answer = c.response(stream_id)
        assert answer.status == 200 and answer.reset is None, bytes(answer.body)
        assert "request_id" in answer.json()
        c.still_serves()


# --- 13. graceful shutdown --------------------------------------------------------------------------------------


def test_sigterm_sends_goaway_before_closing():
    """§6.8: a server shutting down gracefully SHOULD send GOAWAY (NO_ERROR), and endpoints SHOULD send GOAWAY
    before closing a connection; its last stream id covers the stream already served (and a later GOAWAY never
    raises it, checked in H2.handle). The relay then exits cleanly (started_relay checks its exit status)."""
    with started_relay("media-relay-h2-goaway-") as server:
        with H2(server) as c:
            c.start()
            assert c.get("/healthz").status == 200
            server.process.terminate()
            deadline = time.monotonic() + TIMEOUT
            try:
                while not c.goaways and c.read_frame(deadline) is not None:
                    pass
            except TimeoutError:
                pass
            assert c.goaways, f"no GOAWAY within {TIMEOUT} s of SIGTERM (closed: {c.closed}); frames: {c.frames[-3:]}"
            last, code, _ = c.goaways[0]
            assert code == NO_ERROR and last >= 1, c.goaways
