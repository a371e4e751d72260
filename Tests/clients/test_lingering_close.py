"""An early error answer (before the request's body is read) reaches clients that write their whole body before they
read: the relay lingers, reading and dropping the rest, instead of closing into a reset."""
import socket
import ssl
import urllib.error
import urllib.request

import pytest

ELEVEN_MIB = 11 * 1024 * 1024


def write_everything_then_read(port, head, body):
    """A client that sends the whole request before reading a byte of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)  # a reset here is the failure this test exists for
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_body_over_the_limit_gets_its_413_after_all_of_it_was_written(relay):
    body = b"{" + b" " * (ELEVEN_MIB - 2) + b"}"
    head = (f"POST /fal-ai/flux/schnell HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Key {relay.key}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answer = write_everything_then_read(relay.http_port, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error_type":"payload_too_large"' in answer


def test_an_upload_refused_before_its_body_is_read_is_told_why(relay):
    body = b"x" * ELEVEN_MIB
    head = (f"POST /files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Authorization: Key not-a:key\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answer = write_everything_then_read(relay.http_port, head, body)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_urllib_sees_the_413(relay, scheme):
    """Python's urllib writes the whole body before it reads the status."""
    port = relay.http_port if scheme == "http" else relay.https_port
    request = urllib.request.Request(
        f"{scheme}://127.0.0.1:{port}/fal-ai/flux/schnell", data=b"{" + b" " * (ELEVEN_MIB - 2) + b"}",
        headers={"Content-Type": "application/json", "Authorization": f"Key {relay.key}"}, method="POST")
    context = ssl.create_default_context(cafile=relay.ca) if scheme == "https" else None
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30, context=context)
    assert refused.value.code == 413
    assert b"payload_too_large" in refused.value.read()
