"""The layer both the service and the backends stand on: utilities neither owns (scrubbing, host names).

It imports neither `service/` nor `backends/`, so a request's path never climbs back up through it.
"""
