"""`common.files`: regular files only, capped, and never a wait for a FIFO's writer."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from common.files import UnreadableFile, read_regular_file, read_text_file


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"secret\n")
    assert read_regular_file(path, 7) == b"secret\n"


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "..data").write_text("value")
    (tmp_path / "key").symlink_to("..data")
    assert read_text_file(tmp_path / "key", 100) == "value"


def test_a_file_past_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 2049)
    with pytest.raises(UnreadableFile, match=r"^larger than 2 KiB$"):
        read_regular_file(path, 2048)


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    # A plain open() would wait for a writer forever: the test would hang, not fail.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableFile, match=r"^not a regular file but a FIFO$"):
        read_regular_file(fifo, 1024)


def test_dev_zero_is_refused_before_any_read() -> None:
    with pytest.raises(UnreadableFile, match=r"^not a regular file but a character device$"):
        read_regular_file(Path("/dev/zero"), 1024)


def test_a_symlink_swapped_to_dev_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").symlink_to("/dev/zero")
    with pytest.raises(UnreadableFile, match="character device"):
        read_regular_file(tmp_path / "key", 1024)


def test_a_directory_and_a_socket_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match=r"^not a regular file but a directory$"):
        read_regular_file(tmp_path, 1024)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock"))
        # A socket cannot be opened at all: the system's reason is the message.
        with pytest.raises(UnreadableFile, match=r"^No such device or address$"):
            read_regular_file(tmp_path / "sock", 1024)


def test_a_missing_file_gives_the_systems_reason(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match=r"^No such file or directory$"):
        read_regular_file(tmp_path / "absent", 1024)


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(UnreadableFile, match=r"^not UTF-8 text$"):
        read_text_file(path, 1024)
