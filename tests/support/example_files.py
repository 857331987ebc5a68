"""The files the docs' examples read: `cat.jpg`, and `photos/` with a pass, a block and an invalid image
(the block by the emulator's marker)."""

from __future__ import annotations

from pathlib import Path

from emulator.images import make_jpeg, make_png


def write_example_files(folder: Path) -> None:
    (folder / "cat.jpg").write_bytes(make_jpeg(256, 256))
    photos = folder / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(make_jpeg(300, 200))
    (photos / "b.jpg").write_bytes(make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97"))
    (photos / "c.jpg").write_bytes(b"too small")
