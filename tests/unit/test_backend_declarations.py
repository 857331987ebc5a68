"""What each backend type declares about itself (budget, attempts, budget key, billing, who fetches its
URL images), and that the service reads those declarations rather than knowing any type."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backends.base import Billing
from backends.local.settings import LocalSettings
from backends.options import BackendOptions, variable
from backends.private import PrivateOptions
from backends.registry import BACKEND_TYPES
from backends.tencent.plugin import TENCENT, TencentOptions
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"TENCENTCLOUD_SECRET_ID": "AKIDdeclared", "TENCENTCLOUD_SECRET_KEY": "declared-key"}


def test_tencent_reads_its_budget_attempts_budget_key_and_price_from_its_own_variables() -> None:
    options = TencentOptions.from_environment(
        {
            **CREDENTIALS,
            "IMS_QPS": "40",
            "IMS_MAX_ATTEMPTS": "2",
            "IMS_BUDGET_KEY": "main-account",
            "IMS_PRICE_PER_10K": "30",
        }
    )
    assert (options.qps, options.max_attempts, options.budget_key) == (40, 2, "main-account")
    assert options.billing() == Billing(30.0)
    assert options.billing().per_call == pytest.approx(0.003)


def test_tencent_defaults_to_ims_figures_and_is_billed() -> None:
    options = TencentOptions.from_environment(CREDENTIALS)
    assert (options.qps, options.max_attempts, options.budget_key) == (100, 3, None)
    assert options.billing() == Billing(25.0)


@pytest.mark.parametrize(
    "options",
    [PrivateOptions(url="https://ims.internal:8443/", auth="none"), LocalSettings()],
    ids=["private", "local"],
)
def test_a_private_deployment_and_the_local_backend_bill_nothing(options: BackendOptions) -> None:
    assert options.billing() is None
    assert (options.qps, options.max_attempts) == (100, 3)


def test_a_routing_table_takes_the_accounts_figures_from_the_variables_but_never_their_budget_key() -> None:
    environ = {"IMS_QPS": "40", "IMS_MAX_ATTEMPTS": "2", "IMS_PRICE_PER_10K": "30", "IMS_BUDGET_KEY": "env"}
    table = {"secret_id": "AKIDtable", "secret_key": "table-key"}
    inherited = TENCENT.options_from_table(table, environ)
    assert (inherited.qps, inherited.max_attempts, inherited.budget_key) == (40, 2, None)
    assert inherited.billing() == Billing(30.0)
    own = TENCENT.options_from_table({**table, "qps": 7, "price_per_10k": 0, "budget_key": "b"}, environ)
    assert (own.qps, own.max_attempts, own.budget_key) == (7, 2, "b")
    assert own.billing() == Billing(0.0)


def _declared_variables() -> set[str]:
    """Every variable a backend type's options are read from."""
    fields = (field for kind in BACKEND_TYPES.values() for field in kind.options.model_fields.values())
    return {name for field in fields if (name := variable(field))}


def test_the_gateways_settings_read_no_variable_a_backend_type_declares() -> None:
    gateway = {name for field in Settings.model_fields.values() if (name := variable(field))}
    assert {"IMS_QPS", "IMS_MAX_ATTEMPTS", "IMS_BUDGET_KEY", "IMS_PRICE_PER_10K"} <= _declared_variables()
    # The one shared on purpose: the gateway's downloads and the local backend's reach the same networks.
    assert gateway & _declared_variables() == {"MODERATION_FETCH_ALLOW_NETWORKS"}


def test_each_type_says_who_downloads_its_url_images() -> None:
    # IMS's own downloader gives up after 3 s; the others are passed the URL.
    assert [BACKEND_TYPES[name].fetch for name in ("tencent", "private", "local")] == [
        "gateway",
        "backend",
        "backend",
    ]


def _service_strings() -> dict[str, set[str]]:
    """Every string constant of every module under service/ (docstrings and descriptions included)."""
    found = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found[str(path.relative_to(ROOT))] = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
    return found


def test_the_service_names_no_vendor_type_and_no_variable_of_one() -> None:
    named = {TENCENT.name} | (_declared_variables() - {"MODERATION_FETCH_ALLOW_NETWORKS"})
    offenders = {path: sorted(strings & named) for path, strings in _service_strings().items()}
    assert {path: found for path, found in offenders.items() if found} == {}
