"""What users do today without the gateway: a thread pool calling IMS through the official SDK.

Each worker calls `ImageModeration` and, on RequestLimitExceeded, sleeps 1 s, 2 s, then 4 s between
attempts before giving up: the 2**n backoff of the SDK's own `StandardRetryer`, whose retry predicate
is used as is (it also retries network errors). Unlike `StandardRetryer` it does not sleep after the
last attempt, which would only lengthen the baseline's wall time.
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.retry import StandardRetryer

from testbed.processes import Credentials

RETRY_SLEEPS = (1.0, 2.0, 4.0)
SDK_TIMEOUT = 15


@dataclass(frozen=True)
class BaselineResult:
    concurrency: int
    items: int
    succeeded: int
    # Every RequestLimitExceeded the SDK raised, retried or not.
    rate_limited: int
    wall_seconds: float
    # CPU time of the whole bench process (every thread) during the run: near wall_seconds means the
    # client itself, under the GIL, is what limits the baseline.
    cpu_seconds: float

    @property
    def failed(self) -> int:
        return self.items - self.succeeded

    @property
    def throughput(self) -> float:
        return self.succeeded / self.wall_seconds


@dataclass(frozen=True)
class _Outcome:
    succeeded: bool
    rate_limited: int


class _Workers:
    """One SDK client per thread: the SDK does not document its clients as thread-safe."""

    def __init__(self, emulator_url: str, credentials: Credentials) -> None:
        self._endpoint = urlsplit(emulator_url).netloc
        self._credentials = credentials
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            http_profile = HttpProfile()
            http_profile.endpoint = self._endpoint
            http_profile.scheme = "http"
            http_profile.reqTimeout = SDK_TIMEOUT
            client = CommonClient(
                "ims",
                "2020-12-29",
                credential.Credential(self._credentials.secret_id, self._credentials.secret_key),
                "ap-guangzhou",
                profile=ClientProfile(httpProfile=http_profile),
            )
            self._local.client = client
        return client

    def moderate(self, content: str, data_id: str) -> _Outcome:
        client = self._client()
        rate_limited = retries = 0
        while True:
            try:
                client.call_json("ImageModeration", {"FileContent": content, "DataId": data_id})
            except TencentCloudSDKException as error:
                rate_limited += str(error.get_code()).startswith("RequestLimitExceeded")
                if retries == len(RETRY_SLEEPS) or not StandardRetryer.should_retry(None, error):
                    return _Outcome(False, rate_limited)
                time.sleep(RETRY_SLEEPS[retries])
                retries += 1
            else:
                return _Outcome(True, rate_limited)


def run_baseline(
    emulator_url: str, credentials: Credentials, image: bytes, items: int, concurrency: int
) -> BaselineResult:
    workers = _Workers(emulator_url, credentials)
    content = base64.b64encode(image).decode("ascii")
    cpu_before, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(workers.moderate, [content] * items, [f"base-{i}" for i in range(items)]))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    return BaselineResult(
        concurrency=concurrency,
        items=items,
        succeeded=sum(o.succeeded for o in outcomes),
        rate_limited=sum(o.rate_limited for o in outcomes),
        wall_seconds=wall,
        cpu_seconds=cpu,
    )
