"""The ImageModeration answer: every field and nested structure of ims 2020-12-29 (ims-facts §3.3, §3.4).

Deterministic: the markers in the image choose the verdicts, and the image's MD5 seeds the small
scores of the scenes nothing was found in, so the same image always gets the same answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .imagecheck import ImageInfo
from .ink import InkHit
from .marker import Hit

DEFAULT_BIZ_TYPE = "TencentCloudDefault"
# The classification scenes IMS always reports (as in the official example) and their sub-labels.
LABEL_SCENES: dict[str, tuple[str, ...]] = {
    "Porn": ("SexBehavior", "PornHuman", "SexProduct"),
    "Sexy": ("SexyBehavior", "SexyDress"),
    "Terror": ("Knife", "Gun", "Blood", "TerrorFlag"),
    "Illegal": ("Gamble", "Drug"),
    "Teenager": ("Smoking", "Tattoo"),
}
OBJECT_SCENES_REPORTED = ("PolityFace", "AppLogo", "MapRecognition")
# Words the OCR details report for a text hit, by label; other labels use their sub-label.
_KEYWORDS = {"Ad": "add my wechat", "Abuse": "idiot", "Illegal": "online casino", "Porn": "xxx video"}

Json = dict[str, Any]


@dataclass(frozen=True)
class Subject:
    """What is being moderated and the echo fields."""

    image: bytes
    info: ImageInfo
    data_id: str
    biz_type: str | None


class _Builder:
    """What every structure of one answer draws on: the hits, the image's MD5 and size."""

    def __init__(self, subject: Subject, hits: list[Hit]) -> None:
        self.subject = subject
        self.hits = hits
        self.md5 = hashlib.md5(subject.image).hexdigest()
        self._digest = bytes.fromhex(self.md5)
        self._low_scores_used = 0

    def low_score(self) -> int:
        """A small, image-dependent score for a scene where nothing was found."""
        score = self._digest[self._low_scores_used % len(self._digest)] % 10
        self._low_scores_used += 1
        return score

    def hits_from(self, source: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.source == source]

    def box(self) -> Json:
        width, height = self.subject.info.width, self.subject.info.height
        return {"X": width / 4, "Y": height / 4, "Width": width / 2, "Height": height / 2, "Rotate": 0.0}


def _verdict(hits: list[Hit]) -> Json:
    """The scene-level (or top-level) fields: the most severe hit, the first one on a tie."""
    if not hits:
        return {"Suggestion": "Pass", "Label": "Normal", "SubLabel": "", "Score": 0}
    top = max(hits, key=lambda hit: hit.severity)
    return {"Suggestion": top.suggestion, "Label": top.label, "SubLabel": top.sub_label, "Score": top.score}


def _by_scene(hits: list[Hit], scene: Callable[[Hit], str]) -> dict[str, list[Hit]]:
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(scene(hit), []).append(hit)
    return groups


def _label_results(b: _Builder) -> list[Json]:
    hits_by_scene = _by_scene(b.hits_from("label"), lambda hit: hit.label)
    results = []
    for scene in [*LABEL_SCENES, *(s for s in hits_by_scene if s not in LABEL_SCENES)]:
        hits = hits_by_scene.get(scene, [])
        names = [hit.sub_label or hit.label for hit in hits]
        details = [{"Name": name, "Score": hit.score} for name, hit in zip(names, hits, strict=True)]
        details += [
            {"Name": name, "Score": b.low_score()}
            for name in LABEL_SCENES.get(scene, ())
            if name not in names
        ]
        verdict = _verdict(hits) if hits else {**_verdict([]), "Score": b.low_score()}
        results.append(
            {"Scene": scene, **verdict, "Details": [{"Id": i, **detail} for i, detail in enumerate(details)]}
        )
    return results


def _object_detail(b: _Builder, index: int, scene: str, hit: Hit) -> Json:
    name, value, object_id = scene, "", ""
    if scene == "QrCode":
        name, value = "QRCODE", f"https://qr.example/{b.md5[:12]}"
    elif scene == "AppLogo":
        value = "ExampleApp"
    elif scene == "PolityFace":
        object_id = f"face-{b.md5[:12]}"
    return {
        "Id": index,
        "Name": name,
        "Value": value,
        "Score": hit.score,
        "Location": b.box(),
        "SubLabel": hit.sub_label,
        "ObjectId": object_id,
    }


def _object_results(b: _Builder) -> list[Json]:
    hits_by_scene = _by_scene(b.hits_from("object"), lambda hit: hit.sub_label or hit.label)
    results = []
    for scene in [*OBJECT_SCENES_REPORTED, *(s for s in hits_by_scene if s not in OBJECT_SCENES_REPORTED)]:
        hits = hits_by_scene.get(scene, [])
        details = [_object_detail(b, i, scene, hit) for i, hit in enumerate(hits)]
        results.append(
            {
                "Scene": scene,
                **_verdict(hits),
                "Names": sorted({d["Name"] for d in details}),
                "Details": details,
            }
        )
    return results


def _ocr_detail(b: _Builder, hit: Hit) -> Json:
    keyword = _KEYWORDS.get(hit.label, (hit.sub_label or hit.label).lower())
    text = f"emulated text with {keyword} inside"
    start = text.index(keyword)
    lib_id, lib_name = f"emu-{hit.label.lower()}-words", f"IMSEMU {hit.label} keywords"
    hit_info = {
        "Type": "Keyword",
        "Keyword": keyword,
        "LibName": lib_name,
        "Positions": [{"Start": start, "End": start + len(keyword)}],
        "Label": hit.label,
    }
    return {
        "Text": text,
        "Label": hit.label,
        "LibId": lib_id,
        "LibName": lib_name,
        "Keywords": [keyword],
        "Score": hit.score,
        "Location": _ink_box(hit) or b.box(),
        "Rate": 99,
        "SubLabel": hit.sub_label,
        "HitInfos": [hit_info],
    }


def _ink_box(hit: Hit) -> Json | None:
    if not isinstance(hit, InkHit):
        return None
    x, y, width, height = hit.box
    return {"X": x, "Y": y, "Width": width, "Height": height, "Rotate": 0.0}


def _ocr_results(b: _Builder) -> list[Json]:
    hits = b.hits_from("ocr")
    details = [_ocr_detail(b, hit) for hit in hits]
    text = "\n".join(detail["Text"] for detail in details)
    return [{"Scene": "OCR", **_verdict(hits), "Details": details, "Text": text}]


def _lib_results(b: _Builder) -> list[Json]:
    hits = b.hits_from("lib")
    details = [
        {
            "Id": i,
            "LibId": f"emu-lib-{hit.label.lower()}",
            "LibName": f"IMSEMU {hit.label} samples",
            "ImageId": f"sample-{b.md5[:12]}",
            "Label": hit.label,
            "Tag": hit.sub_label,
            "Score": hit.score,
        }
        for i, hit in enumerate(hits)
    ]
    return [{"Scene": "Similar", **_verdict(hits), "Details": details}]


def _recognition_results(b: _Builder) -> list[Json]:
    # "Recognition only" models tag what they see without judging it; IMS may send a zero box.
    zero_box = {"X": 0.0, "Y": 0.0, "Width": 0.0, "Height": 0.0, "Rotate": 0.0}
    tags = [{"Name": hit.sub_label or hit.label, "Score": hit.score, "Location": zero_box} for hit in b.hits]
    return [{"Label": "Scene", "Tags": tags}]


def _extra(b: _Builder, object_results: list[Json]) -> str:
    qr_codes = [
        {"Url": detail["Value"]}
        for result in object_results
        if result["Scene"] == "QrCode"
        for detail in result["Details"]
    ]
    return json.dumps({"QRcodeInfo": qr_codes} if qr_codes else {})


def build(subject: Subject, hits: list[Hit]) -> Json:
    """The `Response` object of a successful call, without RequestId."""
    b = _Builder(subject, hits)
    verdict = _verdict(hits)
    object_results = _object_results(b)
    reason = ""
    if hits:
        reason = (
            f"The image shows {verdict['Label']}/{verdict['SubLabel'] or '-'} (score {verdict['Score']})."
        )
    return {
        **verdict,
        "LabelResults": _label_results(b),
        "ObjectResults": object_results,
        "OcrResults": _ocr_results(b),
        "LibResults": _lib_results(b),
        "RecognitionResults": _recognition_results(b),
        "DataId": subject.data_id,
        "BizType": subject.biz_type if subject.biz_type is not None else DEFAULT_BIZ_TYPE,
        "Extra": _extra(b, object_results),
        "FileMD5": b.md5,
        "Reason": reason,
        "StoreUrl": "",
    }
