"""The text of a routing file with one tencent backend, for gateway processes given the tests' keys in
TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."""

from __future__ import annotations


def tencent_routes(name: str, url: str, *default: str) -> str:
    """A routing file with one tencent backend, `name`, keyed by the TENCENTCLOUD_* variables; `default`:
    more lines of its [default] route."""
    table = (
        'type = "tencent"\nsecret_id_env = "TENCENTCLOUD_SECRET_ID"\n'
        'secret_key_env = "TENCENTCLOUD_SECRET_KEY"'
    )
    route = "\n".join((f'chain = ["{name}"]', *default))
    return f'[backends.{name}]\n{table}\nendpoint = "{url}"\n\n[default]\n{route}\n'
