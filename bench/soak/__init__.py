"""`python -m bench.soak` (`make soak`): a long run under faults, for what only a long run shows.

Several long `StreamModerateImages` streams at once, plus a steady trickle of unary `ModerateImage`
calls, go through the gateway (a subprocess, tencent backend) against the IMS emulator (another
subprocess) injecting about 10 % mixed faults. The soak then reports whether every item was answered
exactly once and in time, what the retries cost in backend calls, whether the gateway's memory grew,
and whether the configured secrets leaked into any log line, span, metric or error the soak produced.
"""
