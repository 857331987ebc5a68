"""`python -m bench`: the streaming gateway against IMS's rate limit, measured over real sockets.

One run starts the IMS emulator (800 ms latency, 100 requests/s) and the gateway as subprocesses and
measures, in order: unary latency at idle; a long `StreamModerateImages` stream (throughput against
the budget, RequestLimitExceeded seen by the client, exactly-once answers) with unary calls issued
while it runs; the baseline users have without the gateway (a thread pool calling IMS through the
official SDK with its 1 s, 2 s, 4 s retry style), swept over concurrency; and the gateway's peak RSS
while streaming 5 MB images, for two stream lengths.
"""
