"""Rate governors: the in-process one (`RateGovernor`), and the fleet's, which shares one budget
through Redis (`FleetGovernor`). Both are a `Governor`, the one interface the retrier and router use;
`build_governor` picks one."""

from service.governor.base import Governor, Priority, throttled
from service.governor.choose import FleetConnection, build_governor, default_budget_key
from service.governor.fleet import FleetGovernor
from service.governor.local import RateGovernor

__all__ = [
    "FleetConnection",
    "FleetGovernor",
    "Governor",
    "Priority",
    "RateGovernor",
    "build_governor",
    "default_budget_key",
    "throttled",
]
