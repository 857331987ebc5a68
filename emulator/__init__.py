"""A loopback emulator of Tencent Cloud IMS `ImageModeration` (API 3.0, version 2020-12-29).

It is the stand-in for Tencent in tests and benchmarks: a real HTTP/1.1 server that checks TC3
signatures, enforces the rate limit, validates parameters and images as IMS does and answers in the
IMS envelope, so any IMS client (the official SDK included) works against it given only the endpoint.

    from emulator import EmulatorConfig, Faults, ImsEmulator

    with ImsEmulator(EmulatorConfig(secret_id="AKID...", secret_key="...", latency=0.8)) as emu:
        ...  # send signed requests to emu.url; inspect emu.stats; change emu.config at will

Standalone: `python -m emulator --help`.

A private deployment
--------------------
It also stands in for an IMS-compatible engine run inside a customer's network:
`ImsEmulator(config, ssl_context=...)` serves HTTPS with a server-side `ssl.SSLContext` (with
`verify_mode = CERT_REQUIRED` a client without a certificate from the trusted CA is refused at the
handshake); `EmulatorConfig.auth` is "tc3" (the default), "bearer" (`Authorization: Bearer
<bearer_token>`, else `AuthFailure.InvalidAuthorization`, or `AuthFailure.TokenFailure` for another
token) or "none"; `EmulatorConfig.path` is the one path served (HTTP 404 elsewhere), signed as the
canonical URI under TC3.

Credentials
-----------
`EmulatorConfig.keys` holds more long-term pairs of the account and `revoked` the SecretIds deleted
since (`AuthFailure.SecretIdNotFound`), so a key rotation runs as in CAM: add, switch, revoke.
`temporary_keys` are accepted only with their `X-TC-Token` and until they expire
(`AuthFailure.TokenFailure`). `KeyIssuer` issues them; `MetadataEmulator` (the CVM instance role) and
`StsEmulator` (`AssumeRoleWithWebIdentity`) hand them out on loopback.

Choosing the result: markers
----------------------------
The verdict is chosen by ASCII markers anywhere in the image bytes (after the image data, in a PNG
tEXt chunk, a JPEG or GIF comment; `images.make_png` and friends put them there)::

    IMSEMU:<Suggestion>:<Label>:<SubLabel>:<Score>[:<source>]

    Suggestion  Pass | Review | Block
    Label       letters, e.g. Porn, Sexy, Terror, Illegal, Teenager, Polity, Ad, Abuse
    SubLabel    letters, digits, underscores, possibly empty, e.g. SexBehavior, Knife, QrCode
    Score       0..100
    source      the result structure that reports the hit:
                  object  ObjectResults, scene <SubLabel> (default when SubLabel is QrCode,
                          AppLogo, PolityFace or MapRecognition)
                  ocr     OcrResults with Keywords and HitInfos (default for Label Ad or Abuse)
                  lib     LibResults (image-library match); only when written explicitly
                  label   LabelResults, scene <Label> (the default otherwise)

A marker ends at the first byte that is not a letter, digit, `_` or `:` (or at the end of the data),
so follow an embedded marker with a space or newline. A malformed marker is answered with
`InternalError` whose message explains it, rather than silently ignored.

Examples: `IMSEMU:Block:Porn:SexBehavior:97`, `IMSEMU:Review:Terror:Knife:93`,
`IMSEMU:Block:Ad:QrCode:99` (a QR code object with a URL value), `IMSEMU:Block:Ad:Contact:88`
(an OCR keyword hit), `IMSEMU:Block:Porn::100:lib` (a match in an image library).

Several markers may appear (separated by spaces): each fills its structure, and the top-level
Suggestion/Label/SubLabel/Score come from the most severe (Block > Review > Pass, then the highest
score, then the first). Every structure is always present: with no marker the answer is
Pass/Normal/""/0 with the normal scenes (LabelResults Porn, Sexy, Terror, Illegal and Teenager with
low scores and their sub-label Details; ObjectResults PolityFace, AppLogo, MapRecognition; one OCR
scene; one Similar library scene; a Scene recognition result), as in the official example. Every hit
also adds a RecognitionResults tag. FileMD5 is the MD5 of the image bytes, DataId and BizType are
echoed (BizType defaults to TencentCloudDefault) and Extra is a JSON string.
"""

from .config import EmulatorConfig, TemporaryKey
from .faults import Faults
from .issuer import KeyIssuer
from .metadata import MetadataEmulator
from .server import ImsEmulator
from .stats import Stats
from .sts import StsEmulator

__all__ = [
    "EmulatorConfig",
    "Faults",
    "ImsEmulator",
    "KeyIssuer",
    "MetadataEmulator",
    "Stats",
    "StsEmulator",
    "TemporaryKey",
]
