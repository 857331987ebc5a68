"""Reading what an in-memory OpenTelemetry reader collected."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, object], object]]:
    """Each data point of the metric: its attributes, and its value (a counter) or count (a histogram)."""
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(point.attributes or {}), getattr(point, "count", getattr(point, "value", None)))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
