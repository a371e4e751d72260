"""Bad input always gets a clear fal-shaped error with the right status and x-fal-request-id, never a crash."""
import socket
import ssl

import pytest


def post(http, relay, path, body=None, headers=None, host=None):
    all_headers = {"Authorization": f"Key {relay.key}", "content-type": "application/json"}
    all_headers.update(headers or {})
    return http.post(f"https://{host or relay.queue_host}{path}", content=body, headers=all_headers)


def assert_fal_error(response, status, error_type=None):
    assert response.status_code == status, response.text
    assert response.headers.get("x-fal-request-id")
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "detail" in body
    if error_type:
        assert body["error_type"] == error_type
        assert response.headers["x-fal-error-type"] == error_type
    return body


@pytest.mark.parametrize("body", [b"{", b'{"prompt": "x",}', b"\xff\xfe", b'{"a":1}{"b":2}', b'{"prompt":"\\ud800"}', b'{"a":1,"a":2}', b"NaN"])
def test_malformed_json_is_400(http, relay, body):
    assert_fal_error(post(http, relay, "/fal-ai/flux/dev", body), 400, "invalid_json")


@pytest.mark.parametrize("body", [b"[]", b'"prompt"', b"42", b"null"])
def test_body_that_is_not_an_object_is_422(http, relay, body):
    detail = assert_fal_error(post(http, relay, "/fal-ai/flux/dev", body), 422)["detail"]
    assert detail[0]["loc"] == ["body"]


def test_missing_and_invalid_fields_are_all_reported(http, relay):
    response = post(http, relay, "/fal-ai/flux/dev", b'{"image_size":"huge","num_images":0}')
    detail = assert_fal_error(response, 422)["detail"]
    assert {tuple(item["loc"]) for item in detail} == {("body", "prompt"), ("body", "image_size"), ("body", "num_images")}


def test_unknown_model_is_404(http, relay):
    assert_fal_error(post(http, relay, "/fal-ai/nope/v1", b'{"prompt":"x"}'), 404, "model_not_found")


def test_oversized_body_is_413(http, relay):
    body = b'{"prompt":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    assert_fal_error(post(http, relay, "/fal-ai/flux/dev", body), 413, "payload_too_large")
    # The relay is still healthy afterwards.
    assert http.get(f"https://{relay.queue_host}/healthz").status_code == 200


def test_unknown_request_id_and_route(http, relay):
    headers = {"Authorization": f"Key {relay.key}"}
    missing = "00000000-0000-4000-8000-000000000000"
    assert_fal_error(http.get(f"https://{relay.queue_host}/fal-ai/flux/requests/{missing}/status", headers=headers), 404, "not_found")
    assert http.put(f"https://{relay.queue_host}/fal-ai/flux/requests/{missing}/cancel", headers=headers).status_code == 404
    assert_fal_error(http.get(f"https://{relay.queue_host}/nothing-here", headers=headers), 404)
    assert_fal_error(http.get(f"https://{relay.queue_host}/fal-ai/flux/dev", headers=headers), 405, "method_not_allowed")


def test_bad_authorization_headers_are_401(http, relay):
    for value in ["Key", "Key nocolon", "Basic abc:def", f"Key {relay.key}x"]:
        response = http.post(f"https://{relay.queue_host}/fal-ai/flux/dev", content=b'{"prompt":"x"}', headers={"Authorization": value})
        assert_fal_error(response, 401, "unauthorized")


def test_file_paths_outside_the_store_are_404(http, relay):
    for path in ["/files/../secret", "/files/..%2f..%2fsecret.png", "/files/0123.png", "/files/" + "0" * 32 + ".png", "/files/" + "g" * 32 + ".png"]:
        response = http.get(f"https://{relay.queue_host}{path}")
        assert response.status_code == 404, path


def test_request_status_is_scoped_to_its_app(http, relay, fal):
    handle = fal.submit("fal-ai/flux/schnell", arguments={"prompt": "scoped", "image_size": "square", "seed": 77})
    headers = {"Authorization": f"Key {relay.key}"}
    assert http.get(f"https://{relay.queue_host}/fal-ai/other/requests/{handle.request_id}/status", headers=headers).status_code == 404
    handle.get()


def test_garbage_on_the_socket_does_not_hurt(relay, http):
    context = ssl.create_default_context(cafile=relay.ca)
    for garbage in [b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /fal-ai/flux/dev HTTP/1.1\r\nContent-Length: nope\r\n\r\n"]:
        with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(garbage)
                try:
                    tls.recv(4096)
                except (ConnectionError, ssl.SSLError, socket.timeout):
                    pass
    # Plain-text HTTP sent to the TLS port is refused without harm, too.
    with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            raw.recv(4096)
        except ConnectionError:
            pass
    assert http.get(f"https://{relay.queue_host}/healthz").json() == {"status": "ok"}


def test_plain_http_listener_serves_the_same_api(relay):
    import httpx

    response = httpx.get(f"http://127.0.0.1:{relay.http_port}/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_strict_tls_verification_accepts_the_development_ca(relay):
    context = ssl.create_default_context(cafile=relay.ca)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for host in ["localhost", "127.0.0.1"]:
        with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(relay):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(relay.ca)
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except ValueError:
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="localhost")
