"""Multipart uploads as fal's clients make them (PROTOCOL.md §7.1 c, §7.2): the unmodified Python client above 100 MiB,
and both flows by hand (v3 multipart; initiate-multipart as fal-js sends it), with their errors.
"""
import hashlib
import os
import ssl
import time

import httpx
import pytest

from conftest import started_relay
from peers import FAL_STORAGE_HOSTS, ConnectProxy
from test_uploads import MiB, fal_client_module, key_headers, raw_request, storage_token  # noqa: F401


@pytest.fixture(scope="module")
def relay():
    with started_relay("media-relay-multipart-", ("--tls-extra-names", ",".join(FAL_STORAGE_HOSTS))) as server:
        yield server


@pytest.fixture(scope="module")
def http(relay):
    with httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=60) as client:
        yield client


def create(http, relay, token, name="clip.mp4", content_type="video/mp4"):
    response = http.post(
        f"https://{relay.queue_host}/files/upload/multipart",
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, "X-Fal-File-Name": name,
                 "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["access_url"], body["uploadId"]


def put_part(http, base, number, data, headers=None):
    return http.put(f"{base}/{number}", content=data, headers={"Accept-Encoding": "identity", **(headers or {})})


def tmp_files(relay):
    return sorted(os.listdir(os.path.join(relay.data_dir, "tmp")))


def wait_until(predicate, seconds=5):
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline
        time.sleep(0.05)


# --- the official client ----------------------------------------------------------------------------------------


def test_the_official_client_uploads_120_mib_in_parts(http, relay, monkeypatch, tmp_path, fal_client_module):
    fal_client = fal_client_module
    before = tmp_files(relay)
    data = os.urandom(120 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    proxy = ConnectProxy(relay.https_port)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("SSL_CERT_FILE", relay.ca)
        client = fal_client.SyncClient(key=relay.key)
        started = time.monotonic()
        url = client.upload_file(path)  # > 100 MiB: token at rest.fal.ai, then the v3 multipart flow at base_url
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert elapsed < 60, elapsed
    # The multipart flow's URL is the upload's stable one (a single v3 upload answers the content-addressed URL).
    assert url.startswith(f"https://{relay.queue_host}/files/uploads/") and url.endswith("/big.bin"), url
    digest = hashlib.sha256()
    with http.stream("GET", url) as served:
        assert served.status_code == 200
        for chunk in served.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    wait_until(lambda: tmp_files(relay) == before)  # the parts went once assembled


# --- v3 multipart by hand ---------------------------------------------------------------------------------------


def test_v3_multipart_parts_in_any_order_resent_and_checked_at_completion(http, relay):
    before = tmp_files(relay)
    token = storage_token(http, relay)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    access_url, upload_id = create(http, relay, token)
    assert access_url.startswith(f"https://{relay.queue_host}/files/uploads/") and access_url.endswith("/clip.mp4")
    base = f"{access_url}/multipart/{upload_id}"
    one, two, three, two_again = os.urandom(MiB), os.urandom(MiB), os.urandom(300_000), os.urandom(MiB)

    etags = {}
    for number, data in ((3, three), (1, one), (2, two)):  # out of order, as concurrent parts finish
        response = put_part(http, base, number, data, auth)
        assert response.status_code == 200, response.text
        etags[number] = response.headers["etag"]  # the Python client reads the header
        assert response.json() == {"partNumber": number, "etag": etags[number]}
    stale = etags[2]
    resent = put_part(http, base, 2, two_again, auth)  # resumable per part: the last write wins
    assert resent.status_code == 200
    etags[2] = resent.headers["etag"]
    assert etags[2] != stale

    def complete(parts, headers=auth):
        return http.post(f"{base}/complete", json={"parts": parts}, headers=headers)

    missing = complete([{"partNumber": 1, "etag": etags[1]}, {"partNumber": 4, "etag": etags[3]}])
    assert missing.status_code == 400 and missing.json()["error_type"] == "invalid_part", missing.text
    wrong = complete([{"partNumber": n, "etag": stale if n == 2 else etags[n]} for n in (1, 2, 3)])
    assert wrong.status_code == 400 and "etag" in wrong.json()["detail"], wrong.text
    assert http.get(access_url).status_code == 404  # nothing stored yet

    listed = [{"partNumber": n, "etag": etags[n]} for n in (3, 1, 2)]  # listed as they finished, like the client
    done = complete(listed)
    assert done.status_code == 200, done.text
    assert done.json()["access_url"] == access_url
    expected = one + two_again + three
    served = http.get(access_url)
    assert served.status_code == 200 and served.content == expected
    assert served.headers["content-type"] == "video/mp4"
    assert http.get(done.json()["content_url"]).content == expected  # the usual /files/<digest>.<ext>
    assert complete(listed).json() == done.json()  # a retried completion: the same answer
    late = put_part(http, base, 4, b"late", auth)
    assert late.status_code == 400 and late.json()["error_type"] == "upload_already_completed"
    wait_until(lambda: tmp_files(relay) == before)  # the parts went once assembled


def test_v3_multipart_refuses_bad_input_in_fal_shape(http, relay):
    token = storage_token(http, relay)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    access_url, upload_id = create(http, relay, token, name="x.bin", content_type="application/octet-stream")
    base = f"{access_url}/multipart/{upload_id}"

    unknown = f"{access_url}/multipart/{'0' * 32}"
    for response in (put_part(http, unknown, 1, b"x", auth),
                     http.post(f"{unknown}/complete", json={"parts": []}, headers=auth)):
        assert response.status_code == 404 and response.json()["error_type"] == "not_found", response.text
    for number in ("0", "10001", "abc"):
        response = put_part(http, base, number, b"x", auth)
        assert response.status_code == 400 and response.json()["error_type"] == "invalid_part_number", response.text
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Key nope:nope"}):
        response = put_part(http, base, 1, b"x", headers)
        assert response.status_code == 401 and response.json()["error_type"] == "unauthorized", response.text
        assert http.post(f"{base}/complete", json={"parts": []}, headers=headers).status_code == 401
        assert http.post(f"https://{relay.queue_host}/files/upload/multipart", headers=headers).status_code == 401
    bad_json = http.post(f"{base}/complete", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error_type"] == "invalid_json", bad_json.text
    no_parts = http.post(f"{base}/complete", json={"parts": []}, headers=auth)
    assert no_parts.status_code == 400 and no_parts.json()["error_type"] == "invalid_parts"
    # An API key works as well as a storage token, as for a single v3 upload.
    assert put_part(http, base, 1, b"x", key_headers(relay)).status_code == 200


# --- initiate-multipart as fal-js sends it ----------------------------------------------------------------------


def test_initiate_multipart_with_signed_part_urls(http, relay):
    before = tmp_files(relay)
    grant = http.post(
        f"https://{relay.queue_host}/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
        json={"content_type": "audio/wav", "file_name": "take.wav"}, headers=key_headers(relay),
    )
    assert grant.status_code == 200, grant.text
    upload_url, file_url = grant.json()["upload_url"], grant.json()["file_url"]
    assert file_url.endswith("/take.wav")
    parsed = httpx.URL(upload_url)
    base = f"{parsed.scheme}://{parsed.netloc.decode()}{parsed.path}"  # fal-js: {origin}{pathname}/{n}{search}
    query = f"?{parsed.query.decode()}" if parsed.query else ""
    chunks = [os.urandom(MiB), os.urandom(MiB), os.urandom(123)]

    answers = {}
    for number in (2, 3, 1):  # no credentials: the signed URL is the capability
        response = http.put(f"{base}/{number}{query}", content=chunks[number - 1])
        assert response.status_code == 200, response.text
        answers[number] = response.json()  # fal-js reads {partNumber, etag} from the JSON body
        assert answers[number]["partNumber"] == number
    chunks[0] = os.urandom(MiB)
    answers[1] = http.put(f"{base}/1{query}", content=chunks[0]).json()  # re-sent: the last write wins

    forged = base.rsplit("/", 1)[0] + "/" + "ab" * 20 + ".cd"
    assert http.put(f"{forged}/1", content=b"x").status_code == 401
    assert http.post(f"{forged}/complete", json={"parts": []}).status_code == 401
    stale = http.post(f"{base}/complete{query}", json={"parts": [{"partNumber": 1, "etag": "\"0\""}]})
    assert stale.status_code == 400, stale.text

    parts = [{"partNumber": a["partNumber"], "etag": a["etag"]} for a in (answers[1], answers[2], answers[3])]
    done = http.post(f"{base}/complete{query}", json={"parts": parts}, headers={"Content-Type": "application/json"})
    assert done.status_code == 200 and done.headers["content-type"].startswith("application/json"), done.text
    served = http.get(file_url)
    assert served.status_code == 200 and served.content == b"".join(chunks)
    wait_until(lambda: tmp_files(relay) == before)


def test_complete_multipart_by_name_with_the_upload_url(http, relay):
    grant = http.post(
        f"https://{relay.queue_host}/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
        json={"content_type": "image/png", "file_name": "big.png"}, headers=key_headers(relay),
    ).json()
    chunks = [os.urandom(MiB), os.urandom(5)]
    parts = [http.put(f"{grant['upload_url']}/{n + 1}", content=chunk).json() for n, chunk in enumerate(chunks)]
    complete_url = f"https://{relay.queue_host}/storage/upload/complete-multipart?storage_type=fal-cdn-v3"
    body = {"upload_url": grant["upload_url"], "parts": parts}
    assert http.post(complete_url, json=body).status_code == 401  # this name takes the key
    elsewhere = http.post(complete_url, json={**body, "upload_url": "https://x/storage/upload/initiate"},
                          headers=key_headers(relay))
    assert elsewhere.status_code == 400 and elsewhere.json()["error_type"] == "invalid_upload_url", elsewhere.text
    done = http.post(complete_url, json=body, headers=key_headers(relay))
    assert done.status_code == 200, done.text
    assert done.json()["file_url"] == grant["file_url"]
    assert http.get(grant["file_url"]).content == b"".join(chunks)


def test_a_part_over_the_part_limit_is_413():
    with started_relay("media-relay-multipart-cap-", ("--max-upload-bytes", str(MiB))) as server:
        with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
            token = storage_token(http, server)["token"]
            access_url, upload_id = create(http, server, token)
            base = f"{access_url}/multipart/{upload_id}"
            auth = {"Authorization": f"Bearer {token}"}
            assert put_part(http, base, 1, os.urandom(MiB), auth).status_code == 200
            # Refused before the body is read: sent by hand, as a client that waits for the answer.
            path = httpx.URL(base).path
            head = (f"PUT {path}/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {MiB + 1}\r\n\r\n")
            over = raw_request(server.http_port, head)
            assert over.startswith(b"HTTP/1.1 413") and b"payload_too_large" in over, over[:300]
            wait_until(lambda: len(tmp_files(server)) == 1)  # only part 1


def test_an_upload_over_the_total_cap_is_413_and_keeps_its_parts():
    with started_relay("media-relay-multipart-total-", ("--max-multipart-upload-bytes", str(3 * MiB))) as server:
        with httpx.Client(verify=ssl.create_default_context(cafile=server.ca), timeout=30) as http:
            token = storage_token(http, server)["token"]
            access_url, upload_id = create(http, server, token)
            base = f"{access_url}/multipart/{upload_id}"
            auth = {"Authorization": f"Bearer {token}"}
            chunks = [os.urandom(MiB) for _ in range(3)]
            etags = [put_part(http, base, n + 1, chunk, auth).headers["etag"] for n, chunk in enumerate(chunks)]
            over = put_part(http, base, 4, b"1", auth)  # 3 MiB + 1: answered after its body, on a live connection
            assert over.status_code == 413 and over.json()["error_type"] == "payload_too_large", over.text
            listed = [{"partNumber": n + 1, "etag": etag} for n, etag in enumerate(etags)]
            done = http.post(f"{base}/complete", json={"parts": listed}, headers=auth)
            assert done.status_code == 200, done.text
            assert http.get(access_url).content == b"".join(chunks)
