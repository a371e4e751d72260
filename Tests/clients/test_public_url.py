"""A relay behind a load balancer that terminates TLS: clients that reach it by `public_url`'s address get URLs with
`public_url`'s scheme, although the relay itself is reached over plain HTTP."""
import httpx

from conftest import started_relay


def test_urls_take_the_public_scheme_for_the_public_address_only():
    with started_relay("media-relay-public-url-", extra_args=("--public-url", "https://127.0.0.1:4443")) as relay:
        plain = f"http://127.0.0.1:{relay.http_port}/fal-ai/flux/schnell"
        headers = {"Authorization": f"Key {relay.key}"}
        behind = httpx.post(plain, json={"prompt": "behind tls"}, headers={**headers, "Host": "127.0.0.1:4443"}).json()
        assert behind["status_url"].startswith("https://127.0.0.1:4443/fal-ai/flux/requests/"), behind
        # Any other address keeps the connection's own scheme.
        direct = httpx.post(plain, json={"prompt": "direct"}, headers=headers).json()
        assert direct["status_url"].startswith(f"http://127.0.0.1:{relay.http_port}/"), direct
