"""The media-relay command line: canonicalize explains cache keys; keys manages API keys."""
import json
import subprocess

from conftest import BINARY, ROOT


def run(*args, stdin=None):
    return subprocess.run([BINARY, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_canonicalize_plain_rfc8785():
    result = run("canonicalize", stdin='{ "b" : 1, "a" : [ 1e21, 0.000001, -0, "\\u00e9\\n" ] }')
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"a":[1e+21,0.000001,0,"é\\n"],"b":1}\n'


def test_canonicalize_with_model_applies_catalog_rules():
    result = run("canonicalize", "--model", "fal-ai/flux/dev", "--catalog", f"{ROOT}/Config/models.json",
                 stdin='{"prompt":"a fox","sync_mode":true,"image_size":"square"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "enable_safety_checker": True, "guidance_scale": 3.5, "image_size": {"height": 512, "width": 512},
        "num_images": 1, "num_inference_steps": 28, "prompt": "a fox",
    }


def test_canonicalize_key_matches_what_the_relay_keys_on(relay, http):
    body = {"prompt": "explain my miss", "image_size": "square", "seed": 8}
    result = run("canonicalize", "--model", "fal-ai/flux/dev", "--key", "--catalog", f"{ROOT}/Config/models.json",
                 "--data-dir", relay.data_dir, stdin=json.dumps(body))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert len(key) == 32
    response = http.post(f"https://{relay.queue_host}/fal-ai/flux/dev", json=body, headers={"Authorization": f"Key {relay.key}"})
    assert f'key="{key}"' in response.headers["cache-status"]


def test_canonicalize_rejects_bad_input_clearly():
    bad = run("canonicalize", stdin='{"a":1,"a":2}')
    assert bad.returncode != 0 and "duplicate key" in bad.stderr and bad.stdout == ""
    invalid = run("canonicalize", "--model", "fal-ai/flux/dev", "--catalog", f"{ROOT}/Config/models.json", stdin="{}")
    assert invalid.returncode != 0 and "prompt" in invalid.stderr
    unknown = run("canonicalize", "--model", "fal-ai/nope", "--catalog", f"{ROOT}/Config/models.json", stdin="{}")
    assert unknown.returncode != 0 and "unknown model" in unknown.stderr


def test_keys_list_and_revoke_take_effect_without_restart(relay, http):
    created = run("keys", "create", "--tier", "signed-in", "--data-dir", relay.data_dir)
    assert created.returncode == 0
    key = created.stdout.strip().splitlines()[-1]
    key_id = key.split(":")[0]
    url = f"https://{relay.queue_host}/fal-ai/flux/dev"
    body = {"prompt": "revocation", "image_size": "square", "seed": 1}
    assert http.post(url, json=body, headers={"Authorization": f"Key {key}"}).status_code == 200
    listed = run("keys", "list", "--data-dir", relay.data_dir).stdout
    assert key_id in listed and key not in listed  # never the key itself
    assert run("keys", "revoke", key_id, "--data-dir", relay.data_dir).returncode == 0
    import time

    deadline = time.time() + 5
    while time.time() < deadline:
        if http.post(url, json=body, headers={"Authorization": f"Key {key}"}).status_code == 401:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("revoked key still accepted after 5 s")
    assert run("keys", "create", "--tier", "galactic", "--data-dir", relay.data_dir).returncode != 0


def test_a_revoked_key_ends_repeated_reads_on_a_kept_alive_connection(relay, http):
    """A finished request's result is sent again from its bytes on one connection (the fast lane); a revocation
    still ends it on that same connection, within the key file's re-check."""
    import time

    key = run("keys", "create", "--tier", "admin", "--data-dir", relay.data_dir).stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Key {key}"}
    body = {"prompt": "settled reads", "image_size": "square", "seed": 3}
    submitted = http.post(f"https://{relay.queue_host}/fal-ai/flux/dev", json=body, headers=headers).json()
    deadline = time.time() + 30
    while http.get(submitted["status_url"], headers=headers).json()["status"] != "COMPLETED":
        assert time.time() < deadline, "the job did not finish in 30 s"
        time.sleep(0.1)
    first = http.get(submitted["response_url"], headers=headers)
    assert first.status_code == 200
    for _ in range(5):
        again = http.get(submitted["response_url"], headers=headers)
        assert again.status_code == 200 and again.content == first.content
        assert again.headers["x-fal-request-id"] == first.headers["x-fal-request-id"]
    assert run("keys", "revoke", key.split(":")[0], "--data-dir", relay.data_dir).returncode == 0
    deadline = time.time() + 5
    while http.get(submitted["response_url"], headers=headers).status_code != 401:
        assert time.time() < deadline, "a revoked key still read the result after 5 s"
        time.sleep(0.05)
