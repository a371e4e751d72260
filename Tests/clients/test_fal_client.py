"""The official fal Python client (fal-client 1.0.3, unmodified) against a live relay over TLS."""
import struct
import threading
import time

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data):
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def fetch(http, url):
    response = http.get(url)
    assert response.status_code == 200, response.text
    return response


def test_subscribe_with_logs_and_queue_updates(fal, relay, http):
    updates = []
    result = fal.subscribe(
        "fal-ai/flux/dev",
        arguments={"prompt": "a lighthouse at dusk", "image_size": "square", "seed": 7},
        with_logs=True,
        on_queue_update=updates.append,
    )
    kinds = [type(update).__name__ for update in updates]
    assert "InProgress" in kinds and kinds[-1] == "Completed", kinds
    messages = [log["message"] for update in updates if type(update).__name__ != "Queued" for log in (update.logs or [])]
    assert "step 28/28" in messages, messages
    image = result["images"][0]
    assert (image["width"], image["height"]) == (512, 512)
    assert image["content_type"] == "image/png"
    assert result["seed"] == 7 and result["prompt"] == "a lighthouse at dusk"
    assert result["has_nsfw_concepts"] == [False]
    assert image["url"].startswith(f"https://127.0.0.1:{relay.https_port}/files/")
    body = fetch(http, image["url"]).content
    assert png_size(body) == (512, 512)


def test_submit_status_result_by_handle_and_by_id(fal):
    handle = fal.submit("fal-ai/flux/schnell", arguments={"prompt": "a red fox", "image_size": "square", "seed": 3})
    assert handle.request_id
    status = handle.status(with_logs=True)
    assert type(status).__name__ in ("Queued", "InProgress", "Completed")
    by_handle = handle.get()
    by_id_status = fal.status("fal-ai/flux/schnell", handle.request_id, with_logs=True)
    assert type(by_id_status).__name__ == "Completed"
    assert any(log["message"] == "step 4/4" for log in by_id_status.logs)
    assert by_id_status.metrics.get("inference_time", 0) >= 0
    by_id = fal.result("fal-ai/flux/schnell", handle.request_id)
    assert by_id == by_handle
    assert by_id["images"][0]["width"] == 512


def test_identical_seeded_requests_share_one_generation(fal, http, relay):
    arguments = {"prompt": "coalesce me", "image_size": "square", "seed": 99, "num_inference_steps": 40}
    first = fal.submit("fal-ai/flux/dev", arguments=arguments)
    second = fal.submit("fal-ai/flux/dev", arguments=dict(reversed(list(arguments.items()))))
    assert first.request_id != second.request_id
    a, b = first.get(), second.get()
    assert a["images"][0]["url"] == b["images"][0]["url"]
    headers = {"Authorization": f"Key {relay.key}"}
    response = http.get(f"https://{relay.queue_host}/fal-ai/flux/requests/{second.request_id}", headers=headers)
    assert response.headers["x-relay-cache"] == "coalesced"


def test_queue_positions_are_real(fal):
    # Two slots: the third and fourth distinct jobs must wait in line.
    handles = [
        fal.submit("fal-ai/flux/dev", arguments={"prompt": f"queued {i}", "image_size": "square", "seed": 1000 + i, "num_inference_steps": 60})
        for i in range(4)
    ]
    positions = []
    for handle in handles:
        status = handle.status()
        if type(status).__name__ == "Queued":
            positions.append(status.position)
    assert positions and max(positions) >= 1, positions
    for handle in handles:
        assert handle.get()["images"]


def test_cancel(fal):
    handle = fal.submit("fal-ai/flux/dev", arguments={"prompt": "never mind", "image_size": "square_hd", "seed": 5, "num_inference_steps": 100})
    handle.cancel()
    status = handle.status()
    assert type(status).__name__ == "Completed"
    assert status.error and status.error_type == "request_cancelled"
    with pytest.raises(fal.client.FalClientHTTPError) as raised:
        handle.get()
    assert raised.value.status_code == 400
    # Cancelling again: it is over.
    with pytest.raises(fal.client.FalClientHTTPError) as again:
        handle.cancel()
    assert again.value.status_code == 400


def test_run(fal):
    result = fal.run("fal-ai/flux/schnell", arguments={"prompt": "a blue bird", "image_size": {"width": 320, "height": 240}, "seed": 1})
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (320, 240)


def test_stream_partial_outputs(fal, http):
    events = list(fal.stream("fal-ai/flux/dev", arguments={"prompt": "streaming", "image_size": "square", "seed": 11}))
    assert len(events) >= 2
    partials = [event for event in events if event.get("partial")]
    assert partials, events
    assert partials[0]["images"][0]["url"].startswith("data:image/png;base64,")
    final = events[-1]
    assert not final.get("partial") and final["images"][0]["url"].startswith("https://")
    assert png_size(fetch(http, final["images"][0]["url"]).content) == (512, 512)


def test_validation_error_is_422(fal):
    with pytest.raises(fal.client.FalClientHTTPError) as raised:
        fal.submit("fal-ai/flux/dev", arguments={"image_size": "square"})
    assert raised.value.status_code == 422
    detail = raised.value.response.json()["detail"]
    assert detail[0]["loc"] == ["body", "prompt"]
    assert detail[0]["type"] == "value_error.missing"


def test_unknown_model_is_404(fal):
    with pytest.raises(fal.client.FalClientHTTPError) as raised:
        fal.submit("fal-ai/no-such-model", arguments={"prompt": "x"})
    assert raised.value.status_code == 404
    assert raised.value.error_type == "model_not_found"


def test_unknown_key_is_401(fal):
    client = fal.SyncClient(key="nope:0000")
    with pytest.raises(fal.client.FalClientHTTPError) as raised:
        client.submit("fal-ai/flux/dev", arguments={"prompt": "x"})
    assert raised.value.status_code == 401


def test_other_media_kinds(fal, http):
    speech = fal.run("fal-ai/kokoro/american-english", arguments={"prompt": "Hello from the relay."})
    audio = fetch(http, speech["audio"]["url"]).content
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert speech["audio"]["content_type"] == "audio/wav"

    video = fal.run("fal-ai/ltx-video", arguments={"prompt": "waves", "image_size": {"width": 160, "height": 96}, "num_frames": 4})
    body = fetch(http, video["video"]["url"]).content
    assert png_size(body) == (160, 96) and b"acTL" in body

    text = list(fal.stream("fal-ai/any-llm", arguments={"prompt": "Tell me about relays", "max_tokens": 12}))
    assert text[-1]["partial"] is False and text[-1]["output"]
    assert all(event["partial"] for event in text[:-1])
