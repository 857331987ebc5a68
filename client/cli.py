"""Moderate images from the command line through a running moderation gateway.

Each TARGET is an image file (one ModerateImage call with its bytes), an http(s) URL (one ModerateImage
call; the backend downloads it) or a folder: every image file in it, recursively and in sorted order
(hidden files and folders skipped; extensions jpg jpeg png gif webp bmp tif tiff ico avif heic heif
svg), sent through one StreamModerateImages call that reads the files only as the server asks for them.

stdout gets one row per image as it is answered: a table, or with --json one JSON object per line,
either {"target", "suggestion", "label", "sub_label", "score", "backend", "request_id", "attempts",
"result"} or {"target", "error": {"code", "message", "reason"}}. The error code is the gRPC status
name (FILE_UNREADABLE when the file could not be read here) and reason the google.rpc.ErrorInfo
reason, or null. stderr gets the progress bar (when it is a terminal, or with --progress) and, for
more than one image, a summary by suggestion, label and error code.

exit status (the most severe outcome wins: BLOCK, then an error, then REVIEW):
  0  every image PASS (or there was nothing to moderate)
  1  some image REVIEW (or a verdict this client does not know), none BLOCK, no error
  2  some image BLOCK
  3  some image could not be moderated (per-image error or failed call), none BLOCK
  4  usage error, or the server could not be reached
  130, 141  interrupted (Ctrl-C), or stdout closed before every row was written (`| head`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from google.protobuf.json_format import MessageToDict
from moderation.v1.moderation_service_pb2 import ModerateImageRequest, ModerateImageResponse, Suggestion
from tqdm import tqdm  # tqdm ships no type information

from client.aio import ModerationClient
from client.errors import ModerationError, ServerUnreachable
from client.settings import DEFAULT_TIMEOUT
from client.stream import StreamResult

Number = TypeVar("Number", int, float)

EXIT_PASS = 0
EXIT_REVIEW = 1
EXIT_BLOCK = 2
EXIT_ERROR = 3
EXIT_CANNOT_RUN = 4
# The shell's statuses for a process killed by SIGINT and by SIGPIPE, which these exits stand in for.
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141

DEFAULT_SERVER = "localhost:50051"
DEFAULT_CALL_TIMEOUT = DEFAULT_TIMEOUT
# A live server connects within milliseconds; this bounds the wait on an address that drops packets.
CONNECT_TIMEOUT = 5.0
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".ico",
        ".avif",
        ".heic",
        ".heif",
        ".svg",
    }
)

PASS, BLOCK, ERROR = "PASS", "BLOCK", "ERROR"
# Table columns and their widths; a longer value pushes its row right rather than being cut.
_COLUMNS = {"SUGGESTION": 10, "LABEL": 12, "SUB_LABEL": 16, "SCORE": 5, "BACKEND": 8, "REQUEST_ID": 0}
_VERDICTS = {value: name.removeprefix("SUGGESTION_") for name, value in Suggestion.items()}


class UsageError(Exception):
    """A target that names nothing that can be moderated."""


@dataclass(frozen=True)
class Options:
    server: str
    json_lines: bool
    call_timeout: float
    stream_timeout: float | None
    biz_type: str
    concurrency: int
    progress: bool


@dataclass(frozen=True)
class Plan:
    """The work, split by how it travels."""

    singles: list[str]  # files and URLs: one ModerateImage call each
    streamed: list[Path]  # images found in folders: all in one StreamModerateImages call


@dataclass(frozen=True)
class Failure:
    code: str  # gRPC status code name, or FILE_UNREADABLE
    message: str
    reason: str | None  # google.rpc.ErrorInfo reason, when the status carried one


@dataclass(frozen=True)
class Outcome:
    target: str
    answer: ModerateImageResponse | Failure


# --- command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 on usage errors, which would read as BLOCK to a script.
        self.print_usage(sys.stderr)
        self.exit(EXIT_CANNOT_RUN, f"{self.prog}: error: {message}\n")


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    # argparse names the type in its message for unparsable values ("invalid float value: 'x'").
    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moderate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="image file, http(s) URL or folder")
    parser.add_argument(
        "--server",
        default=os.environ.get("MODERATION_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help=f"gateway address (default: $MODERATION_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        metavar="SECONDS",
        help=f"deadline of each file or URL call (default {DEFAULT_CALL_TIMEOUT:g}) and of the whole "
        "folder stream (default: none, as a large folder may take long)",
    )
    parser.add_argument("--biz-type", default="", metavar="X", help="moderation policy (IMS BizType)")
    parser.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        metavar="N",
        help="file and URL calls in flight at once (default 8; a folder's pace is set by the server)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        server=args.server,
        json_lines=args.json,
        call_timeout=args.timeout or DEFAULT_CALL_TIMEOUT,
        stream_timeout=args.timeout,
        biz_type=args.biz_type,
        concurrency=args.concurrency,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )


# --- target discovery -----------------------------------------------------------------------------


def is_url(target: str) -> bool:
    return target.lower().startswith(("http://", "https://"))


def find_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place keeps the walk out of hidden folders (.git, caches) altogether.
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def plan_targets(targets: list[str]) -> Plan:
    singles: list[str] = []
    streamed: list[Path] = []
    for target in targets:
        path = Path(target)
        if is_url(target) or path.is_file():
            singles.append(target)
        elif path.is_dir():
            streamed.extend(find_images(path))
        else:
            raise UsageError(f"{target}: no such file or folder, nor an http(s) URL")
    return Plan(singles, streamed)


# --- answers and errors ---------------------------------------------------------------------------


def verdict(answer: ModerateImageResponse | Failure) -> str:
    if isinstance(answer, Failure):
        return ERROR
    return _VERDICTS.get(answer.suggestion, str(answer.suggestion))


def failure(error: ModerationError) -> Failure:
    return Failure(error.code.name, error.message, error.reason)


def unreadable(target: str, error: OSError) -> Outcome:
    return Outcome(target, Failure("FILE_UNREADABLE", str(error), None))


def stream_answer(answer: StreamResult) -> ModerateImageResponse | Failure:
    if answer.error is not None:
        return failure(answer.error)
    assert answer.result is not None, "a stream answer has a result or an error"
    return answer.result


# --- output ---------------------------------------------------------------------------------------


def json_record(outcome: Outcome) -> dict[str, object]:
    answer = outcome.answer
    if isinstance(answer, Failure):
        error = {"code": answer.code, "message": answer.message, "reason": answer.reason}
        return {"target": outcome.target, "error": error}
    return {
        "target": outcome.target,
        "suggestion": verdict(answer),
        "label": answer.label,
        "sub_label": answer.sub_label,
        "score": answer.score,
        "backend": answer.backend,
        "request_id": answer.request_id,
        "attempts": answer.attempts,
        "result": MessageToDict(answer, preserving_proto_field_name=True),
    }


def _row(target: str, width: int, cells: Iterable[str]) -> str:
    # An error row has fewer cells: its message runs on past the column widths.
    padded = (f"{cell:<{size}}" for cell, size in zip(cells, _COLUMNS.values(), strict=False))
    return "  ".join([f"{target:<{width}}", *padded]).rstrip()


def table_header(width: int) -> str:
    return _row("TARGET", width, _COLUMNS)


def table_row(outcome: Outcome, width: int) -> str:
    answer = outcome.answer
    if isinstance(answer, Failure):
        reason = f" [{answer.reason}]" if answer.reason else ""
        return _row(outcome.target, width, [ERROR, f"{answer.code}: {answer.message}{reason}"])
    cells = [verdict(answer), answer.label, answer.sub_label, str(answer.score), answer.backend]
    return _row(outcome.target, width, [*cells, answer.request_id])


@dataclass
class Tally:
    verdicts: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, answer: ModerateImageResponse | Failure) -> None:
        self.verdicts[verdict(answer)] += 1
        if isinstance(answer, Failure):
            self.errors[answer.code] += 1
        else:
            self.labels[answer.label or "(none)"] += 1


def _counts(counter: Counter[str]) -> str:
    # Most frequent first; names break ties, so the order does not depend on which answer came first.
    names = sorted(counter, key=lambda name: (-counter[name], name))
    return ", ".join(f"{counter[name]} {name}" for name in names)


def summary(tally: Tally) -> str:
    lines = [f"{tally.verdicts.total()} images: {_counts(tally.verdicts)}"]
    if tally.labels:
        lines.append(f"labels: {_counts(tally.labels)}")
    if tally.errors:
        lines.append(f"errors: {_counts(tally.errors)}")
    return "\n".join(lines)


class Report:
    """Shows each outcome as it is answered, keeps the progress bar under the rows and tallies."""

    def __init__(self, options: Options, plan: Plan) -> None:
        targets = [*plan.singles, *map(str, plan.streamed)]
        self.tally = Tally()
        self._json = options.json_lines
        self._width = max(map(len, targets), default=0)
        self._bar = tqdm(total=len(targets), unit="image", file=sys.stderr, disable=not options.progress)
        if not self._json:
            self._write(table_header(self._width))

    def add(self, outcome: Outcome) -> None:
        line = json.dumps(json_record(outcome)) if self._json else table_row(outcome, self._width)
        self.tally.add(outcome.answer)
        self._bar.update()  # first, so the bar redrawn under the row already counts it
        self._write(line)

    def close(self) -> None:
        self._bar.close()

    @staticmethod
    def _write(line: str) -> None:
        # tqdm.write lifts the bar off the terminal first; flushing lets a pipe see each row at once.
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()


def exit_status(verdicts: Set[str]) -> int:
    if BLOCK in verdicts:
        return EXIT_BLOCK
    if ERROR in verdicts:
        return EXIT_ERROR
    if verdicts <= {PASS}:
        return EXIT_PASS
    # REVIEW, or a suggestion newer than this client: either way a person should look.
    return EXIT_REVIEW


# --- calls ----------------------------------------------------------------------------------------


async def wait_until_reachable(client: ModerationClient) -> None:
    """Fails before any file is read when nothing answers, rather than once per image."""
    try:
        await client.wait_until_ready(CONNECT_TIMEOUT)
    except ServerUnreachable as exc:
        raise ServerUnreachable(
            f"cannot connect to the moderation server at {client.target} "
            f"(set --server or MODERATION_SERVER): {exc}"
        ) from None


async def single_request(target: str, biz_type: str) -> ModerateImageRequest:
    if is_url(target):
        return ModerateImageRequest(url=target, biz_type=biz_type)
    content = await asyncio.to_thread(Path(target).read_bytes)
    return ModerateImageRequest(content=content, biz_type=biz_type)


async def moderate_single(
    client: ModerationClient, target: str, options: Options, limit: asyncio.Semaphore, report: Report
) -> None:
    async with limit:
        try:
            request = await single_request(target, options.biz_type)
        except OSError as exc:
            report.add(unreadable(target, exc))
            return
        try:
            result = await client.moderate(request)
        except ModerationError as exc:
            report.add(Outcome(target, failure(exc)))
            return
        report.add(Outcome(target, result))


async def moderate_folder_images(
    client: ModerationClient, paths: list[Path], options: Options, report: Report
) -> None:
    if not paths:
        return
    unanswered = {position: str(path) for position, path in enumerate(paths)}
    sent: list[int] = []  # stream item index -> position in `paths`, as unreadable files are not sent

    async def requests() -> AsyncIterator[tuple[str, ModerateImageRequest]]:
        for position, path in enumerate(paths):
            target = unanswered[position]
            try:
                content = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                del unanswered[position]
                report.add(unreadable(target, exc))
                continue
            sent.append(position)
            yield target, ModerateImageRequest(content=content, biz_type=options.biz_type)

    try:
        async for answer in client.moderate_stream(requests()):
            report.add(Outcome(unanswered.pop(sent[answer.index]), stream_answer(answer)))
    except ModerationError as exc:
        # The stream failed as a whole (deadline, server gone): every image it left unanswered gets
        # that status, so each image is still reported exactly once.
        for target in unanswered.values():
            report.add(Outcome(target, failure(exc)))


async def run(options: Options, plan: Plan) -> int:
    async with ModerationClient(
        options.server, timeout=options.call_timeout, stream_timeout=options.stream_timeout
    ) as client:
        await wait_until_reachable(client)
        report = Report(options, plan)
        limit = asyncio.Semaphore(options.concurrency)
        try:
            await asyncio.gather(
                *(moderate_single(client, target, options, limit, report) for target in plan.singles),
                moderate_folder_images(client, plan.streamed, options, report),
            )
        finally:
            report.close()
    if report.tally.verdicts.total() > 1:
        print(summary(report.tally), file=sys.stderr)
    return exit_status(set(report.tally.verdicts))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_targets(args.targets)
    except UsageError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(run(options_from(args), plan))
    except ServerUnreachable as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (`| head`) has seen enough. Pointing stdout at /dev/null keeps the flush at exit
        # from failing again and printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
