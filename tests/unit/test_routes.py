"""The routing file: a worked configuration loads; every mistake is reported with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.options import secret_values
from backends.private import PrivateOptions
from service.circuit import CircuitBreaker, CircuitState
from service.routing_file import RoutesError, load_routes

ENV = {"CLOUD_ID": "AKIDcloud", "CLOUD_KEY": "cloud-key"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cloud_first_private_as_fallback(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("on-prem-token\n")
    routes = load_routes(
        write(
            tmp_path,
            f"""
[backends.cloud]
type = "tencent"
secret_id_env = "CLOUD_ID"
secret_key_env = "CLOUD_KEY"
qps = 80

[backends.onprem]
type = "private"
url = "https://ims.internal.example:8443/"
auth = "bearer"
token_file = "{tmp_path / "token"}"

[[routes]]
biz_types = ["kids_*"]
chain = ["onprem"]
on_failure = "review"

[default]
chain = ["cloud", "onprem"]
attempts = 2
""",
        ),
        ENV,
    )
    assert routes.default.chain == ("cloud", "onprem")
    assert routes.default.attempts == 2
    assert routes.routes[0].on_failure == "review"
    onprem = routes.backends["onprem"].options
    assert isinstance(onprem, PrivateOptions)
    assert onprem.token is not None
    assert onprem.token.get_secret_value() == "on-prem-token"
    assert {name: b.options.qps for name, b in routes.backends.items()} == {"cloud": 80, "onprem": 100}
    secrets = {value for backend in routes.backends.values() for value in secret_values(backend.options)}
    assert secrets == {"AKIDcloud", "cloud-key", "on-prem-token"}
    assert "cloud-key" not in repr(routes)


def test_every_mistake_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RoutesError) as caught:
        load_routes(
            write(
                tmp_path,
                """
[backends.cloud]
type = "tencent"
secret_id_env = "MISSING_ID"
colour = "blue"

[backends.odd]
type = "quantum"

[[routes]]
chain = ["cloud", "nowhere"]
on_failure = "shrug"

[default]
chain = []
attempts = 99
""",
            ),
            ENV,
        )
    text = str(caught.value)
    assert "quantum" not in text, "values are never echoed"
    for expected in (
        "[backends.cloud] secret_id: the variable MISSING_ID is not set",
        "[backends.cloud] colour: unknown key",
        "[backends.cloud] secret_key: is required",
        "[backends.odd] type: is not a backend type; the types are local, private, tencent",
        "[[routes]] #1: chain names 'nowhere'",
        "[[routes]] #1 biz_types: is required",
        "[[routes]] #1 on_failure",
        "[default] chain",
        "[default] attempts",
    ):
        assert expected in text, expected


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert (breaker.state, breaker.allow()) == (CircuitState.OPEN, False)
    now[0] = 5.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()
    assert not breaker.allow()  # open again
    now[0] = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert (breaker.state, breaker.allow()) == (CircuitState.CLOSED, True)
