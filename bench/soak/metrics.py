"""The gateway's own Prometheus counters, scraped once the load is over."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

ATTEMPTS = "moderation_backend_attempt_duration_seconds_count"
GRANTS = "moderation_governor_grants_total"
REJECTIONS = "moderation_governor_rejections_total"
RETRIES = "moderation_backend_retries_total"
REQUESTS = "moderation_requests_total"
IN_FLIGHT = "moderation_in_flight"
RATE = "moderation_governor_rate_per_second"
CIRCUIT = "moderation_circuit_state"


@dataclass(frozen=True)
class Scrape:
    text: str
    # Sample values by sample name, then by the value of the one label the report breaks them down
    # by; "" holds the sum over every label.
    values: dict[str, dict[str, float]]

    def total(self, name: str) -> float:
        return self.values.get(name, {}).get("", 0.0)

    def by(self, name: str) -> dict[str, float]:
        return {k: v for k, v in self.values.get(name, {}).items() if k}


# The one label each series is broken down by in the report.
_LABEL = {
    ATTEMPTS: "moderation_outcome",
    GRANTS: "moderation_priority",
    REJECTIONS: "moderation_priority",
    RETRIES: "moderation_retry_reason",
    REQUESTS: "rpc_grpc_status_code",
    IN_FLIGHT: "moderation_kind",
}


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name][""] += sample.value
            label = _LABEL.get(sample.name)
            if label is not None and label in sample.labels:
                values[sample.name][sample.labels[label]] += sample.value
    return Scrape(text, {name: dict(by_label) for name, by_label in values.items()})
