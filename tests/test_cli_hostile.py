"""The `moderate` command against a server that breaks the protocol (tests/support/hostile_moderation.py).

Every image gets exactly one row, whatever the server answers; anything that is not a verdict exits 3
(never 0 with rows missing, never 1, which means REVIEW); nothing the server sends reaches the terminal
as a control character.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from moderation_client import cli

from tests.support.cli_runs import PASS_IMAGE, moderate, write
from tests.support.hostile_moderation import ESCAPES, HostileServer, Misbehaviour, hostile_server


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    async with hostile_server() as server:
        yield server


def folder_of_three(tmp_path: Path) -> list[Path]:
    return [write(tmp_path / "photos" / f"{i}.png", PASS_IMAGE) for i in range(3)]


@pytest.mark.parametrize(
    "misbehaviour", [Misbehaviour.ENDS_EARLY, Misbehaviour.REPEATS_AN_INDEX, Misbehaviour.UNKNOWN_INDEX]
)
async def test_every_image_a_stream_leaves_unanswered_is_an_error_row(
    hostile: HostileServer, tmp_path: Path, misbehaviour: Misbehaviour
) -> None:
    hostile.misbehaviour = misbehaviour
    images = folder_of_three(tmp_path)
    run = await moderate(hostile.address, "--json", str(tmp_path / "photos"))
    assert run.status == cli.EXIT_ERROR, run.stderr
    records = run.records()
    assert sorted(record["target"] for record in records) == [str(image) for image in images]
    errors = [record["error"] for record in records if "error" in record]
    assert errors
    assert {error["code"] for error in errors} == {"INTERNAL"}
    assert "Traceback" not in run.stderr


async def test_statuses_with_garbage_details_are_error_rows_not_a_crash(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.misbehaviour = Misbehaviour.GARBAGE_DETAILS
    singles = [write(tmp_path / name, PASS_IMAGE) for name in ("a.png", "b.png")]
    folder = folder_of_three(tmp_path)
    run = await moderate(hostile.address, "--json", *map(str, singles), str(tmp_path / "photos"))
    assert run.status == cli.EXIT_ERROR, run.stderr
    codes = {record["target"]: record["error"]["code"] for record in run.records()}
    assert codes == {
        str(singles[0]): "FAILED_PRECONDITION",
        str(singles[1]): "FAILED_PRECONDITION",
        str(folder[0]): "UNKNOWN",
        str(folder[1]): "UNKNOWN",
        str(folder[2]): "INVALID_ARGUMENT",
    }
    assert "Traceback" not in run.stderr


async def test_control_characters_are_escaped_in_the_table_and_summary(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.misbehaviour = Misbehaviour.ESCAPES
    images = [write(tmp_path / "a.png", PASS_IMAGE), write(tmp_path / "evil\x1b[2J.png", PASS_IMAGE)]
    run = await moderate(hostile.address, *map(str, images))
    assert run.status == cli.EXIT_BLOCK, run.stderr
    for output in (run.stdout, run.stderr):
        assert not any(char in output for char in "\x1b\x07\u202e")
    assert "Porn\\x07\\u202e" in run.stdout
    assert "evil\\x1b[2J.png" in run.stdout
    assert "labels: 2 \\x1b[2J\\x1b[31mPorn\\x07\\u202e" in run.stderr
    # JSON is escaped by its own rules, and keeps the server's text exact.
    records = (await moderate(hostile.address, "--json", str(images[0]))).records()
    assert records[0]["label"] == ESCAPES


async def test_a_draining_server_asking_for_a_billion_seconds_gets_seconds(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.misbehaviour = Misbehaviour.DRAINS_FOREVER
    folder_of_three(tmp_path)
    # The helper's 30 s limit: the folder is resent after the capped delay, not in 31 years.
    run = await moderate(hostile.address, str(tmp_path / "photos"))
    assert run.status == cli.EXIT_PASS, run.stderr
    assert hostile.servicer.streams == 2
    assert len(run.stdout.splitlines()) == 4


async def test_health_not_serving_is_exit_3(hostile: HostileServer) -> None:
    await hostile.set_serving(False)
    run = await moderate(hostile.address, "health")
    assert (run.status, run.stdout) == (cli.EXIT_ERROR, "NOT_SERVING\n")


def test_an_unexpected_exception_exits_3_not_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(options: cli.Options, plan: cli.Plan) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "run", broken)
    assert cli.main([str(write(tmp_path / "a.png", PASS_IMAGE))]) == cli.EXIT_ERROR
    assert "KeyError" in capsys.readouterr().err
