"""The tencent backend with its credentials: their refresh task lives and dies with the backend, and a
call refused for a key just rotated away is sent once more with the source's newer credentials."""

from __future__ import annotations

import time

from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse

from backends.base import SECOND_REQUEST_SLOT, Backend, WrappedBackend
from backends.errors import BackendError, Kind
from backends.tencent.codes import REVOKED_KEY_CODES
from backends.tencent.credentials import CredentialError, CredentialProvider, RefreshingCredentials

__all__ = ["RekeyedBackend"]


class RekeyedBackend(WrappedBackend):
    """A `Backend` around one signing with `credentials`.

    On `AuthFailure.SecretIdNotFound` or `AuthFailure.SignatureFailure` the source is read again (once,
    however many calls ask) and, if it now holds other credentials, the call is made once more within
    the time left, after a rate slot of its own (`SECOND_REQUEST_SLOT`). Either way it is one attempt to
    the service: IMS refused the first before moderating.
    """

    def __init__(self, inner: Backend, credentials: CredentialProvider) -> None:
        super().__init__(inner)
        self._credentials = credentials

    async def start(self) -> None:
        if isinstance(self._credentials, RefreshingCredentials):
            await self._credentials.start()
        await self._backend.start()

    async def moderate(self, request: ModerateImageRequest, *, timeout: float) -> ModerateImageResponse:
        deadline = time.monotonic() + timeout
        try:
            signed_with = self._credentials.current()
            try:
                return await self._backend.moderate(request, timeout=timeout)
            except BackendError as error:
                if error.upstream_code not in REVOKED_KEY_CODES or not isinstance(
                    self._credentials, RefreshingCredentials
                ):
                    raise
                if await self._credentials.reload(signed_with) is None or time.monotonic() >= deadline:
                    raise
            # The resend is a request like any other: it waits for its rate slot, with the time to finish.
            second_slot = SECOND_REQUEST_SLOT.get()
            if second_slot is not None:
                await second_slot()
            return await self._backend.moderate(request, timeout=deadline - time.monotonic())
        except CredentialError as problem:
            raise BackendError(Kind.MISCONFIGURED, str(problem)) from None

    async def aclose(self) -> None:
        try:
            await self._backend.aclose()
        finally:
            if isinstance(self._credentials, RefreshingCredentials):
                await self._credentials.aclose()
