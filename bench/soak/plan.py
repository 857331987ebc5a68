"""What one soak run does: its sizes, the faults the emulator injects and the gateway's settings."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.images import make_jpeg, make_png

# Probabilities per backend call that reached moderation; about 10 % in all. The emulator rolls each
# independently and applies the first that fired, so the realised total is a little under the sum.
FAULTS = {
    "model_call_failed": 0.025,
    "internal_error": 0.02,
    "http_5xx": 0.02,
    "connection_reset": 0.01,
    "malformed_json": 0.01,
    "rate_limit_burst": 0.01,
    "hang": 0.005,
}
FAULT_SEED = 20240917
# IMS's latency is short and variable on a regional endpoint; the jitter keeps answers out of lockstep.
EMULATOR_LATENCY = 0.2
EMULATOR_JITTER = 0.1
# High enough that the governor's budget, not the emulator, is what paces the load.
GATEWAY_QPS = 400
# Lowered from IMS's 15 s so that a hung call costs 3 s of a stream slot, not 15.
BACKEND_TIMEOUT = 3.0
# The gateway's defaults for MODERATION_STREAM_MAX_IN_FLIGHT and MODERATION_MAX_IN_FLIGHT, set
# explicitly because the client mirrors them (see streams.py).
STREAM_WINDOW = 128
SERVER_MAX_IN_FLIGHT = 512
# An answer this long after its deadline counts as late: time for the status to cross loopback.
LATE_TOLERANCE = 0.05
# The RSS sample taken once this share of the stream items is answered is the warmed-up baseline.
WARM_UP_SHARE = 0.2


@dataclass(frozen=True)
class Plan:
    items: int
    streams: int
    unary_rate: float
    # Per-call deadline of the unary loop; the gateway's promise is min(this, BACKEND_TIMEOUT).
    unary_deadline: float = 5.0

    @property
    def stream_deadline(self) -> float:
        """Long enough that only a stalled gateway reaches it: 10 items/s per stream, plus margin."""
        return self.items / 10 + 120

    @property
    def client_window(self) -> int:
        """Items one stream keeps unanswered: what the gateway reads at once, for it and its share of
        the server-wide limit."""
        return max(1, min(STREAM_WINDOW, SERVER_MAX_IN_FLIGHT // self.streams))

    @property
    def total_items(self) -> int:
        return self.items * self.streams

    @property
    def unary_limit(self) -> float:
        """How long a unary call may take: the gateway answers by its deadline or the backend cap."""
        return min(self.unary_deadline, BACKEND_TIMEOUT)


def emulator_arguments() -> list[str]:
    """The emulator's arguments beyond its latency (EMULATOR_LATENCY) and limit (none)."""
    arguments = ["--latency-jitter", str(EMULATOR_JITTER)]
    for kind, probability in FAULTS.items():
        arguments += ["--fault-" + kind.replace("_", "-"), str(probability)]
    # No --qps: the emulator's own limit is not under test, the injected bursts are.
    return [*arguments, "--seed", str(FAULT_SEED)]


def gateway_settings() -> dict[str, str]:
    """The gateway's settings beyond its backend, endpoints and credentials (testbed.processes.gateway)."""
    return {
        "IMS_QPS": str(GATEWAY_QPS),
        "MODERATION_BACKEND_TIMEOUT": str(BACKEND_TIMEOUT),
        "MODERATION_STREAM_MAX_IN_FLIGHT": str(STREAM_WINDOW),
        "MODERATION_MAX_IN_FLIGHT": str(SERVER_MAX_IN_FLIGHT),
        "MODERATION_LOG_FORMAT": "json",
        "MODERATION_LOG_LEVEL": "INFO",
    }


def images() -> list[bytes]:
    """Small valid images whose markers make the emulator answer each verdict and result structure."""
    markers = [
        None,
        "IMSEMU:Review:Sexy:Underwear:72",
        "IMSEMU:Block:Porn:SexBehavior:97",
        "IMSEMU:Block:Ad:QrCode:99",
        "IMSEMU:Block:Ad:Contact:88",
        "IMSEMU:Review:Terror:Knife:93",
    ]
    pngs = [make_png(128, 96, marker) for marker in markers]
    return [*pngs, make_jpeg(200, 120), make_jpeg(200, 120, "IMSEMU:Block:Porn::100:lib")]
