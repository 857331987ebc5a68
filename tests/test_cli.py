"""The `moderate` command line, run as a real subprocess against the real gateway and the IMS emulator."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from moderation_client import cli

from emulator import ImsEmulator
from emulator.images import make_jpeg, make_png
from service.server import Gateway
from testbed.fileserver import serve_files
from tests.support.cli_runs import PASS_IMAGE, moderate, write
from tests.support.gateway import GatewayFactory

REVIEW_IMAGE = make_png(256, 256, marker="IMSEMU:Review:Terror:Knife:93")
BLOCK_IMAGE = make_png(256, 256, marker="IMSEMU:Block:Porn:SexBehavior:97")
NOT_AN_IMAGE = b"plain text that only pretends to be an image by its name\n"


@pytest.fixture
def server(gateway: Gateway) -> str:
    return f"127.0.0.1:{gateway.port}"


@pytest.fixture
def image_server() -> Iterator[str]:
    """A loopback HTTP server holding one image, for URL targets."""
    with serve_files({"/block.png": BLOCK_IMAGE}) as url:
        yield url


async def test_a_passing_file_is_a_table_row_and_exit_0(server: str, tmp_path: Path) -> None:
    image = write(tmp_path / "cat.png", PASS_IMAGE)
    run = await moderate(server, str(image))
    assert run.status == cli.EXIT_PASS, run.stderr
    header, row = run.stdout.splitlines()
    # No PASS has a sub-label and the cache is off: those columns are left out.
    assert header.split() == ["TARGET", "SUGGESTION", "LABEL", "SCORE", "BACKEND", "REQUEST_ID"]
    assert row.split()[:3] == [str(image), "SUGGESTION_PASS", "Normal"]
    assert "tencent" in row
    assert run.stderr == ""


async def test_a_pass_shows_the_models_highest_score_and_json_keeps_zero_values(
    server: str, tmp_path: Path
) -> None:
    image = write(tmp_path / "cat.png", PASS_IMAGE)
    table, json_lines = await moderate(server, str(image)), await moderate(server, "--json", str(image))
    [record] = json_lines.records()
    result = record["result"]
    highest = max(scene["score"] for scene in result["label_results"])
    assert highest > 0
    assert (record["score"], result["score"]) == (highest, 0)
    assert table.stdout.splitlines()[1].split()[3] == str(highest)
    # Zero values are fields too: a PASS's own score, no fallback, not cached, no sub-label.
    assert (result["fallback"], result["cached"], result["sub_label"], record["cached"]) == (
        False,
        False,
        "",
        False,
    )


async def test_a_blocked_file_exits_2_with_the_full_result_in_json(server: str, tmp_path: Path) -> None:
    image = write(tmp_path / "block.png", BLOCK_IMAGE)
    run = await moderate(server, "--json", "--biz-type", "my_policy", str(image))
    assert run.status == cli.EXIT_BLOCK, run.stderr
    [record] = run.records()
    assert {k: record[k] for k in ("target", "suggestion", "label", "sub_label", "score", "backend")} == {
        "target": str(image),
        "suggestion": "SUGGESTION_BLOCK",
        "label": "Porn",
        "sub_label": "SexBehavior",
        "score": 97,
        "backend": "tencent",
    }
    assert record["attempts"] == 1
    assert record["request_id"] == record["result"]["request_id"]
    assert record["result"]["biz_type"] == "my_policy"
    assert record["result"]["label_results"]


async def test_a_url_is_fetched_by_the_backend(server: str, image_server: str, emulator: ImsEmulator) -> None:
    url = f"{image_server}/block.png"
    run = await moderate(server, "--json", url)
    assert run.status == cli.EXIT_BLOCK, run.stderr
    [record] = run.records()
    assert (record["target"], record["label"]) == (url, "Porn")
    _, params = emulator.stats.received[-1]
    assert params["FileUrl"] == url


async def test_an_error_outranks_a_review(server: str, tmp_path: Path) -> None:
    review = write(tmp_path / "knife.png", REVIEW_IMAGE)
    broken = write(tmp_path / "broken.jpg", NOT_AN_IMAGE)
    run = await moderate(server, str(review), str(broken))
    assert run.status == cli.EXIT_ERROR, run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert list(rows) == [str(review), str(broken)]  # in the order given, whichever answered first
    assert rows[str(review)].split()[1:4] == ["SUGGESTION_REVIEW", "Terror", "Knife"]
    assert rows[str(broken)].split()[1:3] == ["ERROR", "INVALID_ARGUMENT:"]
    assert "2 images" in run.stderr


async def test_a_folder_goes_through_one_stream_and_every_image_is_answered_once(
    server: str, tmp_path: Path, emulator: ImsEmulator
) -> None:
    folder = tmp_path / "photos"
    expected = [
        write(folder / "a.png", PASS_IMAGE),
        write(folder / "broken.gif", NOT_AN_IMAGE),
        write(folder / "nested" / "b.jpg", make_jpeg(256, 256)),
        write(folder / "nested" / "c.PNG", BLOCK_IMAGE),
    ]
    # Sorted first, and never sent: the stream's indexes no longer match the files' positions.
    gone = folder / "0-gone.png"
    gone.symlink_to(folder / "deleted.png")
    # A FIFO under an image's name: reading it as a file would wait forever for a writer.
    fifo = folder / "0-fifo.png"
    os.mkfifo(fifo)
    write(folder / ".hidden.png", BLOCK_IMAGE)
    write(folder / ".cache" / "d.png", BLOCK_IMAGE)
    write(folder / "notes.txt", b"not an image extension")

    run = await moderate(server, "--json", "--progress", str(folder))

    assert run.status == cli.EXIT_BLOCK, run.stderr
    records = {record["target"]: record for record in run.records()}
    assert len(run.stdout.splitlines()) == len(records) == 6
    assert sorted(records) == [str(path) for path in [fifo, gone, *expected]]
    assert [records[str(path)].get("suggestion") for path in expected] == [
        "SUGGESTION_PASS",
        None,
        "SUGGESTION_PASS",
        "SUGGESTION_BLOCK",
    ]
    error = records[str(expected[1])]["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["reason"].startswith("IMAGE_")
    assert records[str(gone)]["error"]["code"] == "FILE_UNREADABLE"
    assert records[str(fifo)]["error"]["code"] == "FILE_UNREADABLE"
    assert "not a regular file" in records[str(fifo)]["error"]["message"]
    assert emulator.stats.billed == 3
    assert "6/6" in run.stderr  # the progress bar, on stderr only
    assert "6 images: 3 ERROR, 2 SUGGESTION_PASS, 1 SUGGESTION_BLOCK" in run.stderr
    assert "labels: 2 Normal, 1 Porn" in run.stderr
    assert "errors: 2 FILE_UNREADABLE, 1 INVALID_ARGUMENT" in run.stderr


async def test_a_folder_stream_past_its_deadline_still_reports_each_image_once(
    server: str, tmp_path: Path, emulator: ImsEmulator
) -> None:
    emulator.config.latency = 3.0
    images = [write(tmp_path / f"{i}.png", PASS_IMAGE) for i in range(3)]
    run = await moderate(server, "--json", "--timeout", "0.5", str(tmp_path))
    assert run.status == cli.EXIT_ERROR, run.stderr
    records = run.records()
    assert sorted(record["target"] for record in records) == [str(path) for path in images]
    assert {record["error"]["code"] for record in records} == {"DEADLINE_EXCEEDED"}


async def test_an_unreachable_server_is_one_clear_line_and_exit_4(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    # The port is closed now: connecting is refused.
    run = await moderate(address, str(write(tmp_path / "cat.png", PASS_IMAGE)))
    assert run.status == cli.EXIT_CANNOT_RUN
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert address in line
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "argv",
    [[], ["no/such/file.png"], ["--timeout", "0", "x.png"], ["ftp://example.com/x.png"]],
)
def test_usage_errors_exit_4_not_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_CANNOT_RUN
    assert "usage: moderate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("verdicts", "status"),
    [
        (set(), cli.EXIT_PASS),
        ({"SUGGESTION_PASS"}, cli.EXIT_PASS),
        ({"SUGGESTION_PASS", "SUGGESTION_REVIEW"}, cli.EXIT_REVIEW),
        ({"SUGGESTION_PASS", "SUGGESTION_UNSPECIFIED"}, cli.EXIT_REVIEW),
        ({"SUGGESTION_REVIEW", "ERROR"}, cli.EXIT_ERROR),
        ({"SUGGESTION_REVIEW", "ERROR", "SUGGESTION_BLOCK"}, cli.EXIT_BLOCK),
    ],
)
def test_exit_status_is_the_most_severe_outcome(verdicts: set[str], status: int) -> None:
    assert cli.exit_status(verdicts) == status


def test_folder_discovery_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    for name in ("z.webp", "a/b.JPEG", "a/.c.png", ".git/d.png", "e.txt", "f.svg"):
        write(tmp_path / name, b"x")
    assert cli.find_images(tmp_path) == [tmp_path / "a" / "b.JPEG", tmp_path / "f.svg", tmp_path / "z.webp"]


async def test_cached_answers_are_marked(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = await make_gateway(cache="memory")
    server = f"127.0.0.1:{gateway.port}"
    image = write(tmp_path / "knife.png", REVIEW_IMAGE)
    first, second = await moderate(server, str(image)), await moderate(server, str(image))
    assert "CACHED" not in first.stdout  # nothing cached: the column is left out
    header, row = second.stdout.splitlines()
    assert header.split() == [
        "TARGET",
        "SUGGESTION",
        "LABEL",
        "SUB_LABEL",
        "SCORE",
        "BACKEND",
        "CACHED",
        "REQUEST_ID",
    ]
    # The cached answer carries the request id of the call that produced it.
    assert row.split()[-2:] == ["cached", first.stdout.splitlines()[1].split()[-1]]
    [record] = (await moderate(server, "--json", str(image))).records()
    assert (record["cached"], record["attempts"]) == (True, 0)


async def test_health_is_serving_exit_0(server: str) -> None:
    run = await moderate(server, "health", "--timeout", "2")
    assert (run.status, run.stdout, run.stderr) == (cli.EXIT_PASS, "SERVING\n", "")


async def test_health_of_a_server_that_is_not_there_is_exit_4() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    run = await moderate(address, "health")
    assert run.status == cli.EXIT_CANNOT_RUN
    assert run.stdout == ""
    assert "UNAVAILABLE" in run.stderr
