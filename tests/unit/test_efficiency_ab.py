"""The side-by-side efficiency comparison's table: each target's median CPU per call by round, its
ratio to the echo server's, and its calls per second."""

from __future__ import annotations

from bench.efficiency import ECHO, SMALL, EfficiencyResult
from bench.efficiency_ab import table


def test_the_table_gives_each_targets_median_its_ratio_to_the_echo_and_its_rate() -> None:
    result = EfficiencyResult()
    # Three rounds of 2 s windows: CPU seconds used, calls answered.
    for cpu, calls in ((0.4, 2000), (0.3, 2000), (0.5, 2000)):
        result.add(ECHO, SMALL, cpu, calls, 0)
    for cpu, calls in ((1.8, 1800), (2.0, 1600), (2.4, 2000)):
        result.add("HEAD", SMALL, cpu, calls, 0)
    lines = table(result, [ECHO, "HEAD"], SMALL, seconds=2.0).splitlines()
    echo_line = [ECHO, "0.200", "ms", "1.00x", "echo", "1000", "calls/s", "rounds:", "0.20", "0.15", "0.25"]
    assert lines[0].split() == echo_line
    # Medians: 1.2 ms against 0.2 ms; 5,400 calls in three 2 s windows.
    assert lines[1].split()[:7] == ["HEAD", "1.200", "ms", "6.00x", "echo", "900", "calls/s"]
