"""What names a fleet budget's slices in Redis, and what a routing file may ask of a budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.routing import _route_name
from service.routing_file import RouteConfig, RoutesError, load_routes


def test_route_names_joined_for_a_fleet_key_never_collide() -> None:
    names = {
        _route_name(RouteConfig(chain=("cloud",), biz_types=biz_types))
        for biz_types in (("a+b",), ("a", "b"), ("a%2Bb",))
    }
    assert len(names) == 3
    assert _route_name(RouteConfig(chain=("cloud",))) == "default"


def test_a_routing_file_budget_past_the_settings_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[backends.cloud]\ntype = "local"\nqps = 1000000000000000000\n\n[default]\nchain = ["cloud"]\n'
    )
    with pytest.raises(RoutesError) as caught:
        load_routes(path, {})
    assert "[backends.cloud] qps" in str(caught.value)
