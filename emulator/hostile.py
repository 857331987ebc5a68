"""Hostile upstreams: answers a broken or malicious IMS-compatible endpoint could send.

Set `EmulatorConfig.hostile` to one mode; it applies to every request that reached moderation
(authenticated and valid), in place of the normal answer:

* `echo_headers`: an IMS error whose Code is a well-formed code carrying the request's key id, whose
  Message lists every request header (the TC3 Authorization with its Credential and Signature among
  them) and whose RequestId is the Authorization header;
* `echo_headers_result`: a normal result whose Label is the key id and whose SubLabel, Keywords and
  Extra carry the request headers;
* `huge_body`: a 200 response of `hostile_body_bytes` (200 MB by default), without Content-Length;
* `deep_json`: a 200 response of JSON nested 100,000 arrays deep, well under any body cap;
* `slow_drip`: the normal answer, one byte every `drip_interval` seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

HOSTILE_MODES = frozenset({"echo_headers", "echo_headers_result", "huge_body", "deep_json", "slow_drip"})
DEEP_JSON_LEVELS = 100_000
_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")
_CHUNK_BYTES = 1024 * 1024


def echoed_headers(headers: Mapping[str, str]) -> str:
    """`headers` (names in lower case) as one line."""
    return "; ".join(f"{name}: {value}" for name, value in headers.items())


def key_id_in(headers: Mapping[str, str]) -> str:
    """The key id of a TC3 Authorization header, or "" (bearer and unauthenticated requests)."""
    found = _CREDENTIAL.search(headers.get("authorization") or "")
    return found.group(1) if found else ""


def echo_error(headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        "Response": {
            "Error": {"Code": f"FailedOperation.{key_id_in(headers)}", "Message": echoed_headers(headers)},
            "RequestId": headers.get("authorization") or "",
        }
    }


def echo_result(answer: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    echoed = echoed_headers(headers)
    response = {
        **answer["Response"],
        "Label": key_id_in(headers),
        "SubLabel": echoed,
        "Keywords": [echoed],
        "Extra": echoed,
    }
    return {"Response": response}


def deep_json() -> bytes:
    return b'{"Response": ' + b"[" * DEEP_JSON_LEVELS + b"]" * DEEP_JSON_LEVELS + b"}"


def huge_body(size: int) -> Iterator[bytes]:
    """A JSON-looking body of `size` bytes, in 1 MiB chunks, never held whole."""
    head = b'{"Response": {"Padding": "'
    yield head
    left = size - len(head)
    chunk = b"x" * _CHUNK_BYTES
    while left > 0:
        yield chunk[:left]
        left -= len(chunk)


def encoded(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False).encode()
