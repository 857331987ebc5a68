"""The metrics reference: every instrument the gateway declares, read by constructing its instrument
holders on a meter that records what they create, under the names Prometheus sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name

from backends.tencent.credentials.refresh import CredentialMetrics
from common.scrub import Scrubber
from service.observe import CostMetrics
from service.quotas.calendar import wall_clock
from service.quotas.config import EMPTY
from service.quotas.metrics import QuotaMetrics
from service.tasks.metrics import TaskMetrics
from service.telemetry import BoundedLabel, Metrics

__all__ = ["LABELS", "Instrument", "declared", "table"]


@dataclass(frozen=True)
class Instrument:
    name: str
    kind: str
    unit: str
    description: str

    @property
    def prometheus_name(self) -> str:
        """As the Prometheus exporter writes it: the unit as a suffix, `_total` on a counter."""
        name = sanitize_full_name(self.name)
        unit = map_unit(self.unit)
        if unit and not name.endswith(f"_{unit}"):
            name = f"{name}_{unit}"
        return f"{name}_total" if self.kind == "counter" else name


class _RecordingMeter:
    """A meter that only notes the instruments asked of it."""

    def __init__(self) -> None:
        self.instruments: list[Instrument] = []

    def _note(self, kind: str, name: str, unit: str = "", description: str = "", **_: Any) -> None:
        self.instruments.append(Instrument(name, kind, unit, description))

    def create_counter(self, name: str, **options: Any) -> None:
        self._note("counter", name, **options)

    def create_observable_counter(self, name: str, **options: Any) -> None:
        self._note("counter", name, **options)

    def create_histogram(self, name: str, **options: Any) -> None:
        self._note("histogram", name, **options)

    def create_observable_gauge(self, name: str, **options: Any) -> None:
        self._note("gauge", name, **options)

    # A non-monotonic sum is a gauge to Prometheus.
    def create_observable_up_down_counter(self, name: str, **options: Any) -> None:
        self._note("gauge", name, **options)

    def create_up_down_counter(self, name: str, **options: Any) -> None:
        self._note("gauge", name, **options)


def declared() -> list[Instrument]:
    meter: Any = _RecordingMeter()
    Metrics(meter)
    CostMetrics(meter, outward=Scrubber())
    CredentialMetrics(meter)
    QuotaMetrics(meter, BoundedLabel(1), lambda: EMPTY, wall_clock)
    TaskMetrics(meter)
    return list(meter.instruments)


# The labels each metric is recorded with (the declaration cannot say: they are given per recording).
LABELS: dict[str, str] = {
    "moderation_budget_refusals_total": "`moderation_backend`, `moderation_attempt` (`first` or `retry`)",
    "moderation_circuit_transitions_total": "`moderation_backend`, `moderation_circuit_state` (the state "
    "entered: `open`, `half_open`, `closed`)",
    "moderation_requests_total": "`rpc_method`, `rpc_grpc_status_code`, `moderation_suggestion`, "
    "`moderation_label`",
    "moderation_duration_seconds": "`rpc_method`, `rpc_grpc_status_code`",
    "moderation_backend_attempt_duration_seconds": "`moderation_backend`, `moderation_outcome` (`ok` or the "
    "error kind)",
    "moderation_backend_retries_total": "`moderation_backend`, `moderation_retry_reason` (the upstream code "
    "or error kind)",
    "moderation_governor_grants_total": "`moderation_priority`",
    "moderation_governor_wait_seconds": "`moderation_priority`",
    "moderation_governor_rejections_total": "`moderation_priority`",
    "moderation_admission_refusals_total": "`rpc_method`, `moderation_error_reason` "
    "(`SERVER_OVER_CAPACITY`, `CALLER_OVER_CAPACITY`)",
    "moderation_in_flight": "`moderation_kind` (`unary`, `stream`)",
    "moderation_failovers_total": "`moderation_backend`, `moderation_reason`",
    "moderation_circuit_state": "`moderation_backend`",
    "moderation_governor_rate_per_second": "`moderation_backend`",
    "moderation_fleet_transitions_total": "`moderation_backend`, `moderation_mode` (`fallback`, `shared`)",
    "moderation_fleet_redis_duration_seconds": "`moderation_backend`",
    "moderation_fleet_replicas": "`moderation_backend`",
    "moderation_fleet_fallback": "`moderation_backend`",
    "moderation_fleet_pace_per_second": "`moderation_backend`",
    "moderation_billed_calls_total": "`backend`, `caller`, `biz_type` (`other` past 200 distinct values; "
    "`caller` is empty with authentication off)",
    "moderation_estimated_cost_cny_total": "`backend`, `caller`, `biz_type`",
    "moderation_cache_hits_total": "`moderation_store` (`memory`, `redis`)",
    "moderation_cache_misses_total": "",
    "moderation_cache_coalesced_total": "`moderation_scope` (`process`, `fleet`)",
    "moderation_billed_calls_saved_total": "",
    "moderation_cache_bypassed_total": "`moderation_reason` (`user_fields`, `url`, `store_unavailable`)",
    "moderation_credentials_rotations_total": "`moderation_backend`, `moderation_credential_source`",
    "moderation_credentials_failures_total": "`moderation_backend`, `moderation_credential_source`",
    "moderation_quota_used": "`caller`, `quota` (the count this replica last saw in the current period)",
    "moderation_quota_limit": "`caller`, `quota`",
    "moderation_quota_refused_total": "`caller`, `quota`",
    "moderation_quota_soft_reached_total": "`caller`, `quota`, `threshold` (`80`, `100`)",
    "moderation_quota_store_transitions_total": "`state` (`down`, `up`), `mode` (`fail-open`, `fail-closed`)",
    "moderation_tasks_total": "`moderation_task_state` (`pending`, `running`, `succeeded`, `failed`)",
    "moderation_task_queue_depth": "",
    "moderation_task_oldest_pending_seconds": "",
    "moderation_task_unserved_queue_depth": "",
    "moderation_task_callback_attempts_total": "`moderation_outcome` (`delivered`, `gone`, `http_3xx`, "
    "`http_4xx`, `http_5xx`, `no_answer`, `refused`)",
    "moderation_task_in_doubt_total": "`moderation_outcome` (`not_sent`, `sent_again`, `not_needed`)",
}


def table() -> str:
    rows = ["| metric (Prometheus name) | type | labels | meaning |", "|---|---|---|---|"]
    for instrument in declared():
        labels = LABELS[instrument.prometheus_name]
        rows.append(
            f"| `{instrument.prometheus_name}` | {instrument.kind} | {labels} | {instrument.description} |"
        )
    return "\n".join(rows)
