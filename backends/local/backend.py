"""The embedded backend: real offline moderation in-process, the default when no cloud is configured.

Models load once, in `start()` (the server reports NOT_SERVING until then). Each image is analysed in
a worker thread, off the event loop (onnxruntime and OpenCV release the GIL), so health checks and
other calls stay responsive under a large batch. URL images are downloaded by the gateway itself,
under IMS's rules and SSRF protections (`backends/fetch.py`), and meet the same header limits as `content`.

Work is bounded per request and across requests:
* per request, `FrameLimits`: frames analysed, decoded pixels, every frame's size checked before it is
  decoded, and a `CancelToken` that stops the analysis between frames once its call is over;
* across requests, two `FairBudget`s shared in turn between callers: the analysis threads, and the
  memory images being decoded at once may take (estimated from their headers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Hashable

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from PIL import Image, UnidentifiedImageError

from backends.base import Fingerprint
from backends.calls import CALLER
from backends.errors import BackendError, Kind
from backends.fetch import ImageFetcher
from backends.image_limits import ImageLimits
from backends.local.admission import FairBudget, Grant, NoRoom
from backends.local.analysis import analyze_image
from backends.local.cancel import Cancelled, CancelToken
from backends.local.fingerprint import local_fingerprint
from backends.local.frames import LimitExceeded, decoded_bytes
from backends.local.header import open_header
from backends.local.models import Models
from backends.local.settings import LocalSettings
from backends.local.threads import DaemonPool, release_free_memory

log = logging.getLogger(__name__)

DEFAULT_BIZ_TYPE = "default"
# Admission stops waiting this long before the deadline: an image admitted later could not be analysed
# in time, and the caller learns "overloaded" (worth another backend) rather than a bare timeout.
ANALYSIS_RESERVE = 0.25
# How long shutdown waits for cancelled analyses to reach their next frame.
STOP_WAIT = 5.0
# Decodes at least this large hand their freed memory back to the OS afterwards.
TRIM_AFTER_BYTES = 64 * 1024 * 1024
UNDECODABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)
# IMS's sizes (the local checks share them), and every format Pillow reads, frames and pages included
# (its own checks refuse a page over the limits): only sizes are fitted for it.
LOCAL_IMAGE_LIMITS = ImageLimits(
    formats=frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "DIB", "ICO", "TIFF", "AVIF"})
)


class LocalBackend:
    def __init__(self, settings: LocalSettings, *, name: str = "local", models: Models | None = None) -> None:
        """`models` may be shared, already loaded (tests and benchmarks load them once)."""
        self._name = name
        self._models = models
        self._settings = settings
        # What the verdict cache keys by: what makes this backend's own answer (models, limits).
        self._fingerprint = local_fingerprint(settings)
        self._fetcher = ImageFetcher(settings.fetch)
        self._loaded: Models | None = None
        self._threads = DaemonPool(settings.workers)
        self._workers = FairBudget(settings.workers)
        self._memory = FairBudget(settings.decode_budget_bytes)
        # Analyses under way, each with the future its thread's exit resolves: cancelled, and waited
        # for, at shutdown.
        self._running: dict[CancelToken, asyncio.Future[None]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def image_limits(self) -> ImageLimits:
        return LOCAL_IMAGE_LIMITS

    @property
    def concurrency(self) -> int:
        """Calls worth accepting at once: one working and one queued per worker. Reading further ahead
        only lets items wait until their time budget runs out."""
        return 2 * self._settings.workers

    async def start(self) -> None:
        """Load and warm the models, off the event loop."""
        self._loaded = await self._threads.run(self._load, on_exit=lambda: None)

    def _load(self) -> Models:
        models = self._models
        if models is None:
            models = Models()
            models.warm_up()
        log.info("local backend ready")
        return models

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        if self._loaded is None:
            raise BackendError(Kind.UNAVAILABLE, "the local backend's models are still loading")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        source = request.WhichOneof("image") or "image"
        if source == "url":
            content = await self._fetcher.fetch(request.url, timeout=timeout)
        else:
            content = request.content
        biz_type = request.biz_type or DEFAULT_BIZ_TYPE
        estimate = _estimate(content, source)
        # Without caller names, each call is its own caller: a peer address would lump together
        # everyone behind one proxy or sidecar, and says nothing a caller could not fake.
        caller: Hashable = CALLER.get() or object()
        token = CancelToken(deadline - loop.time())
        analyze = functools.partial(
            analyze_image,
            content,
            interval=request.interval,
            max_frames=request.max_frames,
            models=self._loaded,
            limits=self._settings.limits,
            token=token,
        )
        grants = await self._admit(caller, estimate, deadline - ANALYSIS_RESERVE)

        exited = loop.create_future()

        def finished() -> None:
            del self._running[token]
            exited.set_result(None)
            for grant in grants:
                grant.release()

        self._running[token] = exited
        try:
            result = await self._threads.run(functools.partial(_trimmed, analyze, estimate), on_exit=finished)
        except asyncio.CancelledError:
            # The call timed out or was cancelled: the thread stops at its next frame.
            token.cancel()
            raise
        except Cancelled:
            raise BackendError(Kind.TIMEOUT, "the analysis ran out of time between frames") from None
        except LimitExceeded as exc:
            raise BackendError(Kind.INVALID_REQUEST, str(exc), field=source) from None
        except UNDECODABLE as exc:
            # A header can lie about what follows it.
            raise _undecodable(exc, source) from None
        result.backend = self._name
        result.data_id = request.data_id
        result.biz_type = biz_type
        return result

    async def _admit(self, caller: Hashable, estimate: int, wait_until: float) -> list[Grant]:
        """Room to decode `estimate` bytes, then a thread: memory first, so a large image waiting for
        memory holds no thread that small images could use."""
        loop = asyncio.get_running_loop()
        try:
            memory = await self._memory.acquire(caller, estimate, timeout=wait_until - loop.time())
        except NoRoom as exc:
            raise BackendError(
                Kind.OVERLOADED,
                f"decoding the image takes about {estimate >> 20} MiB: "
                + (
                    "no room in the decode budget before the deadline"
                    if exc.ever
                    else f"more than the whole decode budget ({self._memory.capacity >> 20} MiB)"
                ),
            ) from None
        try:
            worker = await self._workers.acquire(caller, 1, timeout=wait_until - loop.time())
        except NoRoom:
            memory.release()
            raise BackendError(Kind.OVERLOADED, "no analysis thread was free before the deadline") from None
        except BaseException:
            memory.release()
            raise
        return [memory, worker]

    async def aclose(self) -> None:
        """Stop the analyses under way at their next frame, and wait a little for them: a thread still
        inside onnxruntime when the interpreter exits aborts the process. Never longer than
        `STOP_WAIT`: the threads are daemons and cannot keep the process alive."""
        for token in self._running:
            token.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=STOP_WAIT)
        await self._fetcher.aclose()


def _estimate(content: bytes, source: str) -> int:
    """The image's decoded size at the peak, from its header; refusals for headers over a limit."""
    try:
        with open_header(content) as image:
            return decoded_bytes(image)
    except LimitExceeded as exc:
        raise BackendError(Kind.INVALID_REQUEST, str(exc), field=source) from None
    except UNDECODABLE as exc:
        raise _undecodable(exc, source) from None


def _undecodable(exc: Exception, source: str) -> BackendError:
    # The exception names no part of the image a caller could fix, and is the gateway's internals.
    return BackendError(Kind.INVALID_REQUEST, "the image data is corrupt or truncated", field=source)


def _trimmed(analyze: functools.partial[ModerateImageResponse], estimate: int) -> ModerateImageResponse:
    try:
        return analyze()
    finally:
        if estimate >= TRIM_AFTER_BYTES:
            release_free_memory()
