"""A task's trace: its submission's span, which the work and every callback attempt link to (each has a
trace of its own: a task outlives the submission's call by hours)."""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_traceparent", "linked_to"]


def current_traceparent() -> str:
    """The current span as a W3C traceparent, or "" when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def linked_to(traceparent: str) -> list[trace.Link]:
    """A link to the submission's span, when it had one."""
    parts = traceparent.split("-")
    if len(parts) != 4:
        return []
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return []
    submitted = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    return [trace.Link(submitted)] if submitted.is_valid else []
