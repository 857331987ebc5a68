"""CallerAuth.identify over whatever an `authorization` header can hold once grpc has decoded it.

grpc's own clients refuse to send a non-ASCII header value, but a raw HTTP/2 client can, and the
server hands it over decoded (UTF-8, else Latin-1): an in-process context stands in for that client.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.auth import CallerAuth

TOKEN = "checkout-0123456789abcdef"


class _Context:
    def __init__(self, authorization: str | bytes | None) -> None:
        self._metadata = () if authorization is None else (("authorization", authorization),)

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata


AUTH = CallerAuth({TOKEN: "checkout"}, mutual_tls=False)


@pytest.mark.parametrize(
    "presented",
    [
        "Bearer t\u00f6ken-0123456789abcdef",  # a non-ASCII character, as UTF-8 decodes it
        "Bearer checkout-0123456789abcde\u00ff",  # a Latin-1-decoded byte where the last one should be
        f"Bearer {TOKEN}\ud800",  # a lone surrogate
        b"Bearer \xff\xfe",
        "Bearer \u00e9" * 2000,
        "Bearer ",
        "Bearer",
        "",
        f"Basic {TOKEN}",
        f"{TOKEN}",
        None,
    ],
)
def test_any_malformed_token_is_refused_never_raises(presented: str | bytes | None) -> None:
    assert AUTH.identify(_Context(presented)) is None


@pytest.mark.parametrize(
    "presented", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} ", f"Bearer {TOKEN}".encode()]
)
def test_the_right_token_names_its_caller(presented: str | bytes) -> None:
    assert AUTH.identify(_Context(presented)) == "checkout"
