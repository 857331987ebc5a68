"""The fit bench: a corpus IMS cannot take, sent by URL through a gateway that fetches and fits
(and, for comparison, one that passes URLs to IMS); the share moderated, billed calls, the gateway's
CPU and peak RSS per fitted image with many in flight, and the tiled screenshot's text verdict."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion

from bench.fit_corpus import REFERER, Item, Sizes, corpus, origin
from bench.sections import Progress
from testbed import processes
from testbed.client import open_channel, stub
from testbed.processes import Credentials

CALL_TIMEOUT = 60.0


@dataclass
class Outcome:
    name: str
    moderated: bool
    billed: int
    error: str = ""
    answer: ModerateImageResponse | None = None


@dataclass
class FitResult:
    fitted: list[Outcome] = field(default_factory=list)
    passed_on: list[Outcome] = field(default_factory=list)
    in_flight: int = 0
    cpu_per_image: float = 0.0
    rss_before: int = 0
    rss_peak: int = 0
    wall_in_flight: float = 0.0
    text_found: bool = False
    text_offset: float = float("nan")
    screenshot_tiles: int = 0

    @staticmethod
    def share(outcomes: list[Outcome]) -> float:
        return sum(o.moderated for o in outcomes) / len(outcomes) if outcomes else float("nan")

    @staticmethod
    def billed_per_image(outcomes: list[Outcome]) -> float:
        done = [o for o in outcomes if o.moderated]
        return sum(o.billed for o in done) / len(done) if done else float("nan")


def _routes_file(directory: Path, emulator_url: str) -> Path:
    path = directory / "routes.toml"
    path.write_text(
        f"""
[backends.ims]
type = "tencent"
secret_id_env = "TENCENTCLOUD_SECRET_ID"
secret_key_env = "TENCENTCLOUD_SECRET_KEY"
endpoint = "{emulator_url}"

[default]
chain = ["ims"]
fetch_headers = {{ Referer = "{REFERER}" }}
""",
        encoding="utf-8",
    )
    return path


async def _send(address: str, base: str, item: Item) -> Outcome:
    async with open_channel(address) as channel:
        try:
            answer = await stub(channel).ModerateImage(
                ModerateImageRequest(url=base + item.path), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(item.name, False, 0, f"{error.code().name}: {error.details()}")
    return Outcome(item.name, True, answer.attempts, answer=answer)


async def _all(address: str, base: str, items: list[Item]) -> list[Outcome]:
    return [await _send(address, base, item) for item in items]


async def _many(started: processes.Running, base: str, item: Item, count: int, result: FitResult) -> None:
    result.in_flight = count
    result.rss_before = started.status_bytes("VmRSS")
    cpu = started.cpu_seconds()
    began = time.monotonic()
    outcomes = await asyncio.gather(*(_send(started.address, base, item) for _ in range(count)))
    result.wall_in_flight = time.monotonic() - began
    result.cpu_per_image = (started.cpu_seconds() - cpu) / count
    result.rss_peak = started.status_bytes("VmHWM")
    failed = [o.error for o in outcomes if not o.moderated]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} fitted images failed in flight, e.g. {failed[0]}")


def _text_verdict(result: FitResult, items: list[Item]) -> None:
    [screenshot] = [item for item in items if item.ink is not None]
    [outcome] = [o for o in result.fitted if o.name == screenshot.name]
    answer = outcome.answer
    if answer is None or screenshot.ink is None:
        return
    result.screenshot_tiles = answer.normalization.tiles
    found = [d for r in answer.ocr_results for d in r.details if d.label == "Ad"]
    result.text_found = answer.suggestion == Suggestion.SUGGESTION_BLOCK and len(found) == 1
    if found:
        where = found[0].location
        result.text_offset = max(abs(where.x - screenshot.ink[0]), abs(where.y - screenshot.ink[1]))


async def measure(sizes: Sizes, number: int, progress: Progress) -> FitResult:
    progress("generating the corpus")
    items = corpus(sizes, seed=number)
    result = FitResult()
    credentials = Credentials.fresh()
    with (
        tempfile.TemporaryDirectory() as directory,
        origin(items) as base,
        processes.emulator(credentials, qps=None, read_ink=True) as emulator,
    ):
        tencent = {
            "TENCENTCLOUD_SECRET_ID": credentials.secret_id,
            "TENCENTCLOUD_SECRET_KEY": credentials.secret_key,
            "MODERATION_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        routes = _routes_file(Path(directory), emulator.address)
        with processes.serve(MODERATION_ROUTES=str(routes), **tencent) as gateway:
            progress("the corpus through a gateway that fetches and fits")
            result.fitted = await _all(gateway.address, base, items)
            _text_verdict(result, items)
        # A fresh gateway: its peak RSS is the fitted images' in flight, not the corpus's before them.
        # They queue for the fitting memory budget on 2 cores: the longest deadline (15 s) allows for it.
        with processes.serve(
            MODERATION_ROUTES=str(routes), MODERATION_BACKEND_TIMEOUT="15", **tencent
        ) as gateway:
            progress(f"{sizes.in_flight} of the largest photo in flight")
            await _many(gateway, base, items[1], sizes.in_flight, result)
        with processes.gateway(credentials, emulator.address, MODERATION_FETCH="backend") as gateway:
            progress("the corpus through a gateway that passes URLs to IMS")
            result.passed_on = await _all(gateway.address, base, items)
    return result
