"""The embedded backend: real offline moderation in-process, the default when no cloud is configured.

Models load once, in `start()` (the server reports NOT_SERVING until then). Each image is analysed in
a bounded thread pool, off the event loop (onnxruntime and OpenCV release the GIL), so health checks
and other calls stay responsive under a large batch. URL images are downloaded by the gateway itself,
under IMS's rules and SSRF protections (`fetch.py`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse
from PIL import Image, UnidentifiedImageError

from backends.errors import BackendError, Kind
from backends.local.analysis import Checks, analyze_image
from backends.local.fetch import ImageFetcher
from backends.local.imagelib import ImageLibrary, load_samples
from backends.local.imagelib import Kind as SampleKind
from backends.local.keywords import KeywordMatcher, load_libraries
from backends.local.models import Models
from backends.local.policy import Policies, load_policies
from backends.local.settings import LocalSettings

log = logging.getLogger(__name__)

DEFAULT_BIZ_TYPE = "default"


class LocalBackend:
    def __init__(self, settings: LocalSettings, *, name: str = "local", models: Models | None = None) -> None:
        """`models` may be shared, already loaded (tests and benchmarks load them once)."""
        self._name = name
        self._models = models
        self._settings = settings
        # Configuration errors surface at construction, before the server starts.
        self._policies: Policies = load_policies(settings.policy_file)
        self._keywords = KeywordMatcher(load_libraries(settings.keyword_dir) if settings.keyword_dir else [])
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="local-moderation")
        self._fetcher = ImageFetcher(settings.fetch)
        self._checks: Checks | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def concurrency(self) -> int:
        """Calls worth accepting at once: one working and one queued per worker. Reading further ahead
        only lets items wait in the pool until their time budget runs out."""
        return 2 * self._settings.workers

    async def start(self) -> None:
        """Load and warm the models and the sample libraries, off the event loop."""
        loop = asyncio.get_running_loop()
        self._checks = await loop.run_in_executor(self._pool, self._load)

    def _load(self) -> Checks:
        models = self._models
        if models is None:
            models = Models()
            models.warm_up()
        samples = [
            *load_samples(self._settings.allow_dir, SampleKind.ALLOW),
            *load_samples(self._settings.deny_dir, SampleKind.DENY),
        ]
        log.info("local backend ready: %d library samples", len(samples))
        return Checks(models, self._keywords, ImageLibrary(samples))

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        if self._checks is None:
            raise BackendError(Kind.UNAVAILABLE, "the local backend's models are still loading")
        source = request.WhichOneof("image") or "image"
        if source == "url":
            content = await self._fetcher.fetch(request.url, timeout=timeout)
        else:
            content = request.content
        biz_type = request.biz_type or DEFAULT_BIZ_TYPE
        analyze = functools.partial(
            analyze_image,
            content,
            interval=request.interval,
            max_frames=request.max_frames,
            policy=self._policies.for_biz_type(biz_type),
            checks=self._checks,
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, analyze)
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:
            # Downloaded images reach here unvalidated, and a header can lie about what follows it.
            raise BackendError(
                Kind.INVALID_REQUEST, f"the image cannot be decoded ({type(exc).__name__})", field=source
            ) from None
        result.backend = self._name
        result.data_id = request.data_id
        result.biz_type = biz_type
        return result

    async def aclose(self) -> None:
        await self._fetcher.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
