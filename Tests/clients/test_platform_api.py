"""fal's Platform API (PROTOCOL.md §11.3) on a real relay: model search with OpenAPI schemas, prices from the catalog,
the request history with search and payload deletion, and usage in money from real synthetic outputs, each checked
against fal's documented response shapes (docs.fal.ai platform-apis v1)."""
import ssl
import subprocess
import tempfile
import time

import httpx
import pytest

from conftest import BINARY, Relay, started_relay

MODEL_FIELDS = {"display_name", "category", "description", "status", "tags", "updated_at", "is_favorited",
                "thumbnail_url", "model_url", "date", "highlighted", "pinned"}
REQUEST_FIELDS = {"request_id", "endpoint_id", "sent_at", "started_at", "ended_at", "status_code", "duration"}
USAGE_FIELDS = {"endpoint_id", "unit", "quantity", "unit_price", "cost", "currency"}


@pytest.fixture(scope="module")
def platform():
    with started_relay("media-relay-platform-", extra_args=("--synthetic-time-scale", "0")) as relay:
        with httpx.Client(base_url=f"https://{relay.queue_host}", timeout=30,
                          verify=ssl.create_default_context(cafile=relay.ca)) as http:
            yield relay, http


def key(relay, which="key"):
    return {"Authorization": f"Key {getattr(relay, which)}"}


def completed(http, relay, submitted, headers):
    deadline = time.time() + 60
    while time.time() < deadline:
        if http.get(submitted["status_url"], headers=headers).json()["status"] == "COMPLETED":
            return http.get(submitted["response_url"], headers=headers)
        time.sleep(0.02)
    raise AssertionError("request did not complete")


def run(http, relay, model, payload, headers):
    submitted = http.post(f"/{model}", json=payload, headers=headers)
    assert submitted.status_code == 200, submitted.text
    body = submitted.json()
    return body, completed(http, relay, body, headers)


def walk(http, path, headers=None, **params):
    """Every item of a paged Platform API list, following next_cursor; checks has_more on each page."""
    items, cursor = [], None
    for _ in range(100):
        page = http.get(path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers or {})
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) >= {"next_cursor", "has_more"} and body["has_more"] == (body["next_cursor"] is not None)
        items += body.get("models", body.get("items", []))
        cursor = body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("paging did not end")


def test_models_are_listed_found_searched_and_described_by_openapi(platform):
    relay, http = platform
    catalog = [model["id"] for model in http.get("/relay/models").json()["models"]]
    listed = walk(http, "/v1/models", limit=7)
    assert [model["endpoint_id"] for model in listed] == catalog
    for model in listed:
        assert set(model["metadata"]) >= MODEL_FIELDS and model["metadata"]["status"] == "active"
    found = http.get("/v1/models", params=[("endpoint_id", "fal-ai/veo3"), ("endpoint_id", "fal-ai/flux/dev")]).json()
    assert {model["endpoint_id"] for model in found["models"]} == {"fal-ai/veo3", "fal-ai/flux/dev"}
    searched = http.get("/v1/models", params={"q": "kontext max"}).json()["models"]
    assert [model["endpoint_id"] for model in searched] == ["fal-ai/flux-pro/kontext/max"]
    videos = http.get("/v1/models", params={"category": "image-to-video"}).json()["models"]
    assert [model["endpoint_id"] for model in videos] == ["fal-ai/kling-video/v2.1/standard/image-to-video"]
    described = http.get("/v1/models", params={"endpoint_id": "fal-ai/flux/dev", "expand": "openapi-3.0"}).json()
    openapi = described["models"][0]["openapi"]
    schema = openapi["components"]["schemas"]["Input"]
    assert openapi["openapi"].startswith("3.0") and schema["required"] == ["prompt"]
    assert schema["properties"]["num_inference_steps"] == {"type": "integer", "title": "num_inference_steps", "default": 28}
    # The schema's server is this relay: a client that reads it submits here.
    server = openapi["servers"][0]["url"]
    submitted = http.post(f"{server}/fal-ai/flux/dev", json={"prompt": "from the schema"}, headers=key(relay))
    assert submitted.status_code == 200 and submitted.json()["status"] == "IN_QUEUE"


def test_prices_come_from_the_catalog_and_an_unknown_one_is_null(platform):
    _, http = platform
    answer = http.get("/v1/models/pricing", params={"endpoint_id": "fal-ai/flux/dev,fal-ai/veo3,fal-ai/sana"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"prices", "next_cursor", "has_more"}
    prices = {price["endpoint_id"]: price for price in body["prices"]}
    assert prices["fal-ai/flux/dev"] | {"price_source": None} == {
        "endpoint_id": "fal-ai/flux/dev", "unit_price": 0.025, "unit": "megapixels", "currency": "USD",
        "price_source": None}
    assert prices["fal-ai/veo3"]["unit"] == "seconds" and prices["fal-ai/veo3"]["unit_price"] == 0.4
    assert prices["fal-ai/sana"]["unit_price"] is None and prices["fal-ai/sana"]["price_source"].startswith("unknown")


@pytest.mark.parametrize("path,params,status,message", [
    ("/v1/models/pricing", {}, 400, "endpoint_id is required"),
    ("/v1/models/pricing", {"endpoint_id": "fal-ai/nothing"}, 404, "No model"),
    ("/v1/models", {"limit": "500"}, 400, "limit"),
    ("/v1/models", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/v1/models/usage", {"timezone": "Europe/Paris"}, 400, "UTC"),
    ("/v1/models/usage", {"timeframe": "year"}, 400, "timeframe"),
    ("/v1/models/usage", {"start": "last tuesday"}, 400, "start"),
    ("/v1/models/requests/by-endpoint", {"status": "weird"}, 400, "status"),
    ("/v1/models/requests/by-endpoint", {"start": "2026-12-06", "end": "2026-12-05"}, 400, "before end"),
])
def test_bad_parameters_get_fal_platform_errors(platform, path, params, status, message):
    relay, http = platform
    answer = http.get(path, params=params, headers=key(relay))
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["type"] == ("not_found" if status == 404 else "validation_error") and message in error["message"]


def test_history_lists_the_callers_requests_with_payloads_search_and_paging(platform):
    relay, http = platform
    tagged = {**key(relay), "X-Fal-Tags": "team=vision,fal.hidden=x"}
    mine, _ = run(http, relay, "fal-ai/flux/schnell", {"prompt": "a history fox in snow", "seed": 11}, tagged)
    also, _ = run(http, relay, "fal-ai/flux/schnell", {"prompt": "a history owl at night", "seed": 12}, key(relay))
    hidden, _ = run(http, relay, "fal-ai/flux/schnell", {"prompt": "a history fox kept private", "seed": 13},
                    {**key(relay), "X-Fal-Store-IO": "0"})
    anonymous, _ = run(http, relay, "fal-ai/flux/schnell", {"prompt": "a history fox, anonymous", "seed": 14}, {})

    listed = http.get("/v1/models/requests/by-endpoint", headers=key(relay),
                      params={"endpoint_id": "fal-ai/flux/schnell", "expand": "payloads"}).json()
    items = {item["request_id"]: item for item in listed["items"]}
    assert set(items) >= {mine["request_id"], also["request_id"], hidden["request_id"]}
    assert anonymous["request_id"] not in items, "another caller's request"
    item = items[mine["request_id"]]
    assert set(item) >= REQUEST_FIELDS | {"json_input", "json_output"} and item["status_code"] == 200
    assert item["json_input"]["prompt"] == "a history fox in snow" and item["json_output"]["images"]
    assert item["tags"] == {"team": "vision"} and item["cache"] == "miss"
    assert item["sent_at"] <= item["ended_at"] and item["duration"] >= 0
    assert items[hidden["request_id"]]["json_input"] is None and items[hidden["request_id"]]["json_output"] is None
    # Newest end first.
    ends = [entry["ended_at"] for entry in listed["items"]]
    assert ends == sorted(ends, reverse=True)
    # Without expand=payloads, no payloads.
    plain = http.get("/v1/models/requests/by-endpoint", headers=key(relay)).json()["items"]
    assert "json_input" not in plain[0]

    found = http.get("/v1/models/requests/by-endpoint", headers=key(relay), params={"q": "FOX snow"}).json()["items"]
    assert [entry["request_id"] for entry in found] == [mine["request_id"]]
    assert http.get("/v1/models/requests/by-endpoint", headers=key(relay),
                    params={"request_id": also["request_id"]}).json()["items"][0]["request_id"] == also["request_id"]
    assert http.get("/v1/models/requests/by-endpoint", headers=key(relay),
                    params={"status": "user_error"}).json()["items"] == []

    everything = walk(http, "/v1/models/requests/by-endpoint", key(relay), limit=1)
    assert len(everything) == len({entry["request_id"] for entry in everything}) >= 3
    admin = {entry["request_id"] for entry in walk(http, "/v1/models/requests/by-endpoint", key(relay, "admin_key"))}
    assert {mine["request_id"], anonymous["request_id"]} <= admin


def test_history_usage_and_deletion_need_a_key_not_a_browser_token(platform):
    relay, http = platform
    token = http.post("/tokens/", json={"allowed_apps": ["flux"], "token_expiration": 120}, headers=key(relay))
    assert token.status_code in (200, 201), token.text
    for method, path in (("GET", "/v1/models/requests/by-endpoint"), ("GET", "/v1/models/usage"),
                         ("DELETE", "/v1/models/requests/00000000-0000-4000-8000-000000000000/payloads")):
        # Anonymous request ids are their only secret: no listing them; and an app-scoped token is not its key.
        for refused in (http.request(method, path), http.request(method, path, params={"fal_jwt_token": token.json()})):
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authorization_error", refused.text
    # The catalog and prices stay open to anyone.
    assert http.get("/v1/models").status_code == 200


def test_usage_costs_real_outputs_and_counts_what_the_cache_saved(platform):
    relay, http = platform
    headers = key(relay, "admin_key")
    # 1024×768 is 0.79 MP, billed as 1 MP; two images are 2 MP.
    run(http, relay, "fal-ai/flux/dev", {"prompt": "usage one", "seed": 1, "num_images": 2}, headers)
    run(http, relay, "fal-ai/flux/dev", {"prompt": "usage one", "seed": 1, "num_images": 2}, headers)  # a hit
    run(http, relay, "fal-ai/flux-pro/v1.1-ultra", {"prompt": "usage two", "seed": 2}, headers)
    _, video = run(http, relay, "fal-ai/veo3", {"prompt": "usage three", "seed": 3, "duration": 4}, headers)
    assert video.status_code == 200
    run(http, relay, "fal-ai/kokoro/american-english", {"prompt": "usage four"}, headers)

    # The admin sees every key's usage: its own lines are those of its key id.
    answer = http.get("/v1/models/usage", headers=headers, params={"expand": "time_series,summary,auth_method"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {"time_series", "summary", "next_cursor", "has_more"}
    bucket = body["time_series"][-1]
    assert bucket["bucket"].endswith("T00:00:00.000000+00:00")
    admin_id = relay.admin_key.split(":")[0]
    summary = {line["endpoint_id"]: line for line in body["summary"] if line["key_id"] == admin_id}
    assert {line["auth_method"] for line in body["summary"]} == {"API Key", "Anonymous"}
    for line in body["summary"]:
        assert set(line) >= USAGE_FIELDS
    flux = summary["fal-ai/flux/dev"]
    assert (flux["unit"], flux["quantity"], flux["unit_price"], flux["requests"]) == ("megapixels", 2, 0.025, 1)
    assert flux["cost"] == pytest.approx(0.05) and flux["saved_cost"] == pytest.approx(0.05)
    assert flux["saved_requests"] == 1
    ultra = summary["fal-ai/flux-pro/v1.1-ultra"]
    assert (ultra["unit"], ultra["quantity"]) == ("images", 1) and ultra["cost"] == pytest.approx(0.06)
    veo = summary["fal-ai/veo3"]
    assert (veo["unit"], veo["quantity"]) == ("seconds", 4) and veo["cost"] == pytest.approx(1.6)
    kokoro = summary["fal-ai/kokoro/american-english"]
    assert kokoro["unit"] == "1000 characters" and kokoro["quantity"] == pytest.approx(0.01)
    assert kokoro["unit_price"] is None and kokoro["cost"] is None, "an unknown price is never guessed"

    hourly = http.get("/v1/models/usage", headers=headers,
                      params={"timeframe": "hour", "bound_to_timeframe": "true"}).json()["time_series"]
    assert hourly and all(b["bucket"].endswith(":00:00.000000+00:00") for b in hourly)
    # Another key's usage does not include the admin's generations.
    theirs = http.get("/v1/models/usage", headers=key(relay), params={"expand": "summary"}).json()["summary"]
    assert "fal-ai/veo3" not in {line["endpoint_id"] for line in theirs}


def test_only_the_owner_or_an_admin_deletes_payloads(platform):
    relay, http = platform
    submitted, result = run(http, relay, "fal-ai/flux/dev", {"prompt": "delete me", "seed": 99}, key(relay))
    media = result.json()["images"][0]["url"]
    path = f"/v1/models/requests/{submitted['request_id']}/payloads"
    # Another key is told the request does not exist; the anonymous caller needs a key; nothing is deleted.
    stranger = subprocess.run([BINARY, "keys", "create", "--tier", "pro", "--data-dir", relay.data_dir],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
    refused = http.delete(path, headers={"Authorization": f"Key {stranger}"})
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found"
    assert http.get("/v1/models/requests/by-endpoint", headers={"Authorization": f"Key {stranger}"}).json()["items"] == []
    assert http.delete(path).status_code == 401
    assert http.get(media).status_code == 200
    deleted = http.delete(path, headers=key(relay, "admin_key"))
    assert deleted.status_code == 200 and deleted.json()["cdn_delete_results"][0]["exception"] is None
    assert http.get(media).status_code == 404


def test_an_owner_deletes_payloads_and_media_and_it_survives_a_restart():
    with tempfile.TemporaryDirectory(prefix="media-relay-payloads-") as data_dir:
        relay = Relay(data_dir, extra_args=("--synthetic-time-scale", "0"))
        request_id, owner = None, None
        try:
            with httpx.Client(base_url=f"https://{relay.queue_host}", timeout=30,
                              verify=ssl.create_default_context(cafile=relay.ca)) as http:
                submitted, result = run(http, relay, "fal-ai/flux/dev", {"prompt": "forget me", "seed": 5}, key(relay))
                request_id = submitted["request_id"]
                owner = key(relay)
                media = result.json()["images"][0]["url"]
                assert http.get(media).status_code == 200
                deleted = http.delete(f"/v1/models/requests/{request_id}/payloads", headers=key(relay))
                assert deleted.status_code == 200, deleted.text
                assert deleted.json()["cdn_delete_results"] == [{"link": media, "exception": None}]
                assert http.get(media).status_code == 404
                assert http.get(submitted["response_url"], headers=key(relay)).status_code == 404
                again = http.post("/fal-ai/flux/dev", json={"prompt": "forget me", "seed": 5}, headers=key(relay))
                assert again.headers["x-relay-cache"] == "miss", "the cached result was purged"
                completed(http, relay, again.json(), key(relay))
                item = http.get("/v1/models/requests/by-endpoint", headers=key(relay),
                                params={"request_id": request_id, "expand": "payloads"}).json()["items"][0]
                assert item["json_input"] is None and item["json_output"] is None and item["payloads_deleted"]
                repeat = http.delete(f"/v1/models/requests/{request_id}/payloads", headers=key(relay))
                assert repeat.status_code == 200 and repeat.json()["cdn_delete_results"] == []
                # A result without media is purged from the cache too.
                text = {"prompt": "forget this text", "seed": 6}
                said, _ = run(http, relay, "fal-ai/any-llm", text, key(relay))
                assert http.post("/fal-ai/any-llm", json=text, headers=key(relay)).headers["x-relay-cache"] == "hit"
                gone = http.delete(f"/v1/models/requests/{said['request_id']}/payloads", headers=key(relay))
                assert gone.status_code == 200 and gone.json()["cdn_delete_results"] == []
                assert http.post("/fal-ai/any-llm", json=text, headers=key(relay)).headers["x-relay-cache"] == "miss"
        finally:
            relay.stop()
        # The same data directory again (its keys too; each start also creates one more).
        relay = Relay(data_dir, extra_args=("--synthetic-time-scale", "0"))
        try:
            with httpx.Client(base_url=f"https://{relay.queue_host}", timeout=30,
                              verify=ssl.create_default_context(cafile=relay.ca)) as http:
                items = http.get("/v1/models/requests/by-endpoint", headers=owner,
                                 params={"expand": "payloads"}).json()["items"]
                restored = {item["request_id"]: item for item in items}
                assert restored[request_id]["json_input"] is None and restored[request_id]["payloads_deleted"]
                kept = [item["json_input"]["prompt"] for item in items if item["json_input"]]
                assert "forget me" in kept, "the second run kept its input"
                assert http.get(f"/fal-ai/flux/requests/{request_id}", headers=owner).status_code == 404
        finally:
            relay.stop()


def test_usage_is_summed_per_tag(platform):
    relay, http = platform
    admin = key(relay, "admin_key")
    run(http, relay, "fal-ai/flux/schnell", {"prompt": "per tag one", "seed": 41},
        {**admin, "X-Fal-Tags": "team=tagged,env=prod"})
    run(http, relay, "fal-ai/flux/schnell", {"prompt": "per tag two", "seed": 42}, {**admin, "X-Fal-Tags": "team=tagged"})
    body = http.get("/v1/models/usage", headers=admin, params={"expand": "summary,tags", "tag": "team=tagged"}).json()
    lines = {(line["endpoint_id"], line["tag"]): line for line in body["summary"]}
    # 1024×768 at $0.003 a megapixel: each request is one (rounded-up) megapixel.
    assert lines[("fal-ai/flux/schnell", "team=tagged")]["requests"] == 2
    assert lines[("fal-ai/flux/schnell", "team=tagged")]["cost"] == pytest.approx(0.006)
    assert lines[("fal-ai/flux/schnell", "env=prod")]["requests"] == 1, "a request counts under each of its tags"
    assert set(tag for _, tag in lines) == {"team=tagged", "env=prod"}, "only requests with the tag asked for"
    untagged = http.get("/v1/models/usage", headers=admin, params={"expand": "summary,tags"}).json()["summary"]
    assert any(line["tag"] is None for line in untagged), "untagged requests have a line of their own"


def test_a_history_page_holds_at_most_8_mib_of_payloads(platform):
    relay, http = platform
    admin = key(relay, "admin_key")
    # Each request's input holds a 3 MB prompt, and FLUX echoes it in its output: about 6 MB of payload apiece.
    marker = f"bulky {time.time_ns()}"
    ids = []
    for n in range(3):
        body = {"prompt": f"{marker} {n} " + "x" * 3_000_000, "seed": n, "image_size": {"width": 64, "height": 64}}
        submitted, _ = run(http, relay, "fal-ai/flux/schnell", body, admin)
        ids.append(submitted["request_id"])
    pages, seen, cursor = 0, [], None
    while True:
        params = {"expand": "payloads", "q": marker, "limit": 10, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/models/requests/by-endpoint", headers=admin, params=params)
        assert page.status_code == 200 and len(page.content) < 16 << 20
        body = page.json()
        assert len(body["items"]) == 1, "a second 6 MB item would pass 8 MiB"
        seen += [item["request_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert pages == 3 and sorted(seen) == sorted(ids)
