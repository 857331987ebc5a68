"""One soak run: the processes up, the load through them, everything they produced read back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.soak.collector import SpanCollector, receiving
from bench.soak.leaks import SecretScan
from bench.soak.logs import LogSummary, summarise
from bench.soak.memory import RssSamples, sample_rss
from bench.soak.metrics import Scrape, scrape
from bench.soak.phases import Phases, split
from bench.soak.plan import EMULATOR_LATENCY, Plan, emulator_arguments, gateway_settings, images
from bench.soak.streams import StreamLedger, run_stream
from bench.soak.tally import Tally
from bench.soak.unary import run_unary
from testbed import processes
from testbed.client import open_channel, stub
from testbed.processes import REPO_ROOT, Credentials, Running, free_port

Progress = Callable[[str], None]
PROGRESS_INTERVAL = 15.0


@dataclass(frozen=True)
class SoakResult:
    plan: Plan
    # Seconds of load: from the first request to the last answer, unary calls included.
    duration: float
    streams: list[StreamLedger]
    unary: Tally
    rss: RssSamples
    # The gateway's /metrics at the end of the load, and its CPU seconds by then.
    metrics: Scrape
    gateway_cpu: float
    # The gateway's exit status after SIGTERM.
    gateway_exit: int
    spans: SpanCollector
    phases: Phases
    log: LogSummary
    scan: SecretScan

    @functools.cached_property
    def items(self) -> Tally:
        """Every stream's items as one tally."""
        merged = Tally()
        for ledger in self.streams:
            merged.outcomes += ledger.tally.outcomes
            merged.latencies += ledger.tally.latencies
            merged.late_outcomes += ledger.tally.late_outcomes
            merged.worst_overshoot = max(merged.worst_overshoot, ledger.tally.worst_overshoot)
        return merged


async def soak(plan: Plan, folder: Path, progress: Progress) -> SoakResult:
    """Runs the plan; the processes' output stays in `folder`."""
    credentials = Credentials.fresh()
    scan = SecretScan(
        {"TENCENTCLOUD_SECRET_ID": credentials.secret_id, "TENCENTCLOUD_SECRET_KEY": credentials.secret_key}
    )
    collector = SpanCollector(scan)
    metrics_port = free_port()
    async with receiving(collector) as otlp_endpoint:
        settings = {
            **gateway_settings(),
            "MODERATION_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            # Traces go over OTLP to this process's receiver, as they would to a collector.
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        }
        with (
            processes.emulator(
                credentials, latency=EMULATOR_LATENCY, qps=None, arguments=emulator_arguments()
            ) as emulator,
            processes.tree_gateway(
                REPO_ROOT, credentials, emulator.address, settings, output=(folder, "gateway")
            ) as gateway,
        ):
            progress(f"gateway pid {gateway.pid} on {gateway.address}, emulator on {emulator.address}")
            started = time.monotonic()
            streams, unary, rss = await _load(plan, gateway, scan, progress)
            duration = time.monotonic() - started
            metrics = await asyncio.to_thread(scrape, metrics_port)
            cpu = gateway.cpu_seconds()
            # In a thread: the gateway flushes its last spans to this loop's receiver as it stops.
            exit_status = await asyncio.to_thread(processes.stop_process, gateway.process)
    (folder / "gateway.metrics").write_text(metrics.text)
    scan.scan("metrics lines", metrics.text.encode(), count=metrics.text.count("\n"))
    for stream in ("stderr", "stdout"):
        scan.scan_lines(f"gateway {stream} lines", folder / f"gateway.{stream}")
    return SoakResult(
        plan=plan,
        duration=duration,
        streams=streams,
        unary=unary,
        rss=rss,
        metrics=metrics,
        gateway_cpu=cpu,
        gateway_exit=exit_status,
        spans=collector,
        phases=split(streams, collector.items),
        log=summarise(folder / "gateway.stderr"),
        scan=scan,
    )


async def _load(
    plan: Plan, gateway: Running, scan: SecretScan, progress: Progress
) -> tuple[list[StreamLedger], Tally, RssSamples]:
    """The streams and the unary loop together, with the RSS sampled throughout."""
    pictures = images()
    ledgers = [StreamLedger(number) for number in range(plan.streams)]
    unary, rss = Tally(), RssSamples()
    stop_unary, stop_sampling = asyncio.Event(), asyncio.Event()

    def answered() -> float:
        return sum(ledger.tally.answered for ledger in ledgers) / plan.total_items

    async with contextlib.AsyncExitStack() as channels:
        stubs = [stub(await channels.enter_async_context(open_channel(gateway.address))) for _ in ledgers]
        unary_stub = stub(await channels.enter_async_context(open_channel(gateway.address)))
        async with asyncio.TaskGroup() as group:
            group.create_task(sample_rss(gateway, answered, rss, stop_sampling))
            reporter = group.create_task(_report(ledgers, unary, rss, answered, progress))
            unary_calls = group.create_task(run_unary(unary_stub, plan, pictures, unary, scan, stop_unary))
            await asyncio.gather(
                *(
                    run_stream(
                        stream_stub,
                        ledger,
                        pictures,
                        count=plan.items,
                        window=plan.client_window,
                        timeout=plan.stream_deadline,
                        scan=scan,
                    )
                    for stream_stub, ledger in zip(stubs, ledgers, strict=True)
                )
            )
            stop_unary.set()
            await unary_calls
            reporter.cancel()
            # Every call has answered: the sampler's last sample is the end of the run.
            stop_sampling.set()
    return ledgers, unary, rss


async def _report(
    ledgers: list[StreamLedger],
    unary: Tally,
    rss: RssSamples,
    answered: Callable[[], float],
    progress: Progress,
) -> None:
    """A line every PROGRESS_INTERVAL seconds, so a long soak shows it is alive and how it fares."""
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        items = sum(ledger.tally.answered for ledger in ledgers)
        errors = sum(ledger.tally.errors for ledger in ledgers)
        memory = rss.samples[-1][1] / 2**20 if rss.samples else 0.0
        progress(
            f"{answered() * 100:.0f} % of stream items answered ({items}, {errors} errors), "
            f"{unary.answered} unary calls ({unary.errors} errors), gateway RSS {memory:.0f} MiB"
        )
