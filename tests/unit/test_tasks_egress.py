"""The callback URL's checks at submission: the image URLs' SSRF guard, and https unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from service.tasks.egress import CallbackEgress

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    ("url", "allow_http", "allowed", "refused"),
    [
        ("https://hooks.example.com/moderation", False, (), False),
        ("http://hooks.example.com/moderation", False, (), True),
        ("http://hooks.example.com/moderation", True, (), False),
        ("https://127.0.0.1:8443/hook", False, (), True),
        ("https://127.0.0.1:8443/hook", False, LOOPBACK, False),
        ("https://2130706433/hook", False, LOOPBACK, True),  # a numeric spelling, whatever is allowed
        ("https://169.254.169.254/latest", False, (), True),
        ("https://metadata.google.internal/hook", False, (), True),
        ("https://user:pass@hooks.example.com/hook", False, (), True),
        ("ftp://hooks.example.com/hook", True, (), True),
        ("https://" + "a" * 2100 + ".example.com/", False, (), True),
    ],
)
def test_the_callback_url_is_checked_as_image_urls_are(
    url: str, allow_http: bool, allowed: tuple[ipaddress.IPv4Network, ...], refused: bool
) -> None:
    egress = CallbackEgress(allowed_networks=allowed, allow_http=allow_http)
    assert (egress.problem(url) is not None) is refused
