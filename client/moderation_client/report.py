"""The `moderate` command's output as it runs: rows or JSON lines on stdout, a progress bar on stderr."""

from __future__ import annotations

import json
import sys

from tqdm import tqdm  # tqdm ships no type information

from moderation_client.output import Outcome, Tally, json_record, table


class Report:
    """Shows each outcome: at once with --json, else as a table once all are in; tallies them.

    The progress bar stays under the rows. The table waits for the last answer so that its columns
    fit their contents and none is empty, and lists the images in the order of `targets` (as given,
    each folder's sorted); it is printed even when the run is interrupted.
    """

    def __init__(self, targets: list[str], *, json_lines: bool, progress: bool) -> None:
        self.tally = Tally()
        self._json = json_lines
        self._order = {target: position for position, target in enumerate(targets)}
        self._outcomes: list[Outcome] = []
        self._bar = tqdm(total=len(targets), unit="image", file=sys.stderr, disable=not progress)

    def add(self, outcome: Outcome) -> None:
        self.tally.add(outcome.answer)
        self._bar.update()  # first, so the bar redrawn under the row already counts it
        if self._json:
            self._write(json.dumps(json_record(outcome)))
        else:
            self._outcomes.append(outcome)

    def close(self) -> None:
        self._bar.close()
        if self._outcomes:
            in_order = sorted(self._outcomes, key=lambda outcome: self._order[outcome.target])
            self._write("\n".join(table(in_order)))

    @staticmethod
    def _write(text: str) -> None:
        # tqdm.write lifts the bar off the terminal first; flushing lets a pipe see each row at once.
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()
