"""Near-duplicate deny lists through a real gateway against the emulator: a re-encoded JPEG at quality 70
and a resized copy of a listed photograph are denied without a backend call, an unrelated photograph is
not, and nothing near an allowed image is allowed."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from moderation.v1.moderation_service_pb2 import DecisionSource, ModerateImageRequest, Suggestion
from PIL import Image, PngImagePlugin

from emulator import ImsEmulator
from service.policy.pdq import pdq_hash
from testbed.local_images import encode, photo
from tests.support.gateway import GatewayFactory, moderate
from tests.support.policy_files import policy_settings, write_policy


def with_marker(image: Image.Image, marker: str) -> bytes:
    """A PNG of `image` whose text chunk tells the emulator what to answer."""
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker + "\n")
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


ASTRONAUT = photo("astronaut")
LISTED = encode(ASTRONAUT)
REENCODED = encode(ASTRONAUT, "JPEG", quality=70)
RESIZED = encode(ASTRONAUT.resize((300, 300)))
UNRELATED = encode(photo("coffee"))


def near_policy(folder: Path) -> Path:
    listed = pdq_hash(LISTED)
    assert listed is not None
    return write_policy(
        folder,
        """
        [image_lists.known_bad]
        file = "known_bad.pdq"
        kind = "near_deny"
        label = "Illegal"

        [default]
        image_lists = ["known_bad"]
        """,
        **{"known_bad.pdq": f"{listed.digest.hex()} case-77\n"},
    )


async def test_copies_of_a_listed_image_are_denied_without_a_backend_call(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    gateway = await make_gateway(**policy_settings(near_policy(tmp_path)))
    for copy in (REENCODED, RESIZED):
        answer = await moderate(gateway, ModerateImageRequest(content=copy))
        assert (answer.suggestion, answer.label) == (Suggestion.SUGGESTION_BLOCK, "Illegal")
        assert answer.decision.source == DecisionSource.DECISION_SOURCE_DENY_LIST
        assert (answer.decision.rule, answer.decision.matched) == ("known_bad", "case-77")
    assert emulator.stats.billed == 0
    unrelated = await moderate(gateway, ModerateImageRequest(content=UNRELATED))
    assert unrelated.decision.source == DecisionSource.DECISION_SOURCE_BACKEND
    assert emulator.stats.billed == 1


async def test_nothing_near_an_allowed_image_is_allowed(
    tmp_path: Path, make_gateway: GatewayFactory, emulator: ImsEmulator
) -> None:
    marker = "IMSEMU:Block:Porn:SexBehavior:99"
    allowed = with_marker(ASTRONAUT, marker)
    perturbed_image = ASTRONAUT.copy()
    red, green, blue = perturbed_image.getpixel((0, 0))  # type: ignore[misc]
    perturbed_image.putpixel((0, 0), (red ^ 1, green, blue))
    perturbed = with_marker(perturbed_image, marker)
    policy = write_policy(
        tmp_path,
        """
        [image_lists.trusted]
        file = "trusted.sha256"
        kind = "allow"

        [default]
        image_lists = ["trusted"]
        """,
        **{"trusted.sha256": hashlib.sha256(allowed).hexdigest() + "\n"},
    )
    gateway = await make_gateway(**policy_settings(policy))
    assert (await moderate(gateway, ModerateImageRequest(content=allowed))).suggestion == (
        Suggestion.SUGGESTION_PASS
    )
    answer = await moderate(gateway, ModerateImageRequest(content=perturbed))
    assert (answer.suggestion, answer.decision.source) == (
        Suggestion.SUGGESTION_BLOCK,
        DecisionSource.DECISION_SOURCE_BACKEND,
    )
    assert emulator.stats.billed == 1
