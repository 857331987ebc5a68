"""Whether a URL's host is one any HTTP client can connect to: the check before the connection tries.

httpx encodes a non-ASCII or `xn--` host with the `idna` package and raises `idna.IDNAError` (a
`UnicodeError`, not `httpx.InvalidURL`) for one it rejects, such as `xn--a`; hosts it lets through
can still fail later, in the resolver's own IDNA codec, with a `UnicodeError` ("label empty or too
long") for `a..b` or a label over 63 characters. `parse_url` turns the first into `httpx.InvalidURL`
and `host_name_problem` finds the second, so neither surfaces as an unexpected exception.
"""

from __future__ import annotations

import ipaddress

import httpx

__all__ = ["MAX_HOST_CHARS", "MAX_LABEL_CHARS", "host_name_problem", "parse_url"]

# RFC 1035: 63 octets a label, 253 characters a name in dotted form.
MAX_LABEL_CHARS = 63
MAX_HOST_CHARS = 253


def parse_url(raw: str, *, base: httpx.URL | None = None) -> httpx.URL:
    """`httpx.URL(raw)`, or `raw` resolved against `base`; every refusal is `httpx.InvalidURL`."""
    try:
        url = base.join(raw) if base is not None else httpx.URL(raw)
        # The host is IDNA-decoded lazily, on first use: fail here, not wherever it is first read.
        url.host  # noqa: B018
    except UnicodeError:
        # idna's refusal of the host; its text quotes the host, so it is not kept.
        raise httpx.InvalidURL("the URL's host is not a valid internationalised host name") from None
    return url


def host_name_problem(host: str) -> str | None:
    """What is wrong with `host` (as `httpx.URL.host` or `urlsplit().hostname` give it), or None.

    IP literals are left to the callers' own address rules. The message never quotes the host.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    name = host[:-1] if host.endswith(".") else host
    try:
        # httpx's own IDNA 2008 check first (it refuses A-labels such as `xn--a`), then the stdlib
        # codec the resolver uses, which refuses empty and over-long labels httpx lets through.
        parse_url(f"http://{name}/")
        ascii_name = name.encode("idna").decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return "the host name is not a valid (internationalised) host name"
    if not ascii_name or len(ascii_name) > MAX_HOST_CHARS:
        return f"the host name must be 1 to {MAX_HOST_CHARS} characters"
    if any(not 0 < len(label) <= MAX_LABEL_CHARS for label in ascii_name.split(".")):
        return f"each label of the host name must be 1 to {MAX_LABEL_CHARS} characters"
    return None
