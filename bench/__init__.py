"""`python -m bench`: the gateway measured over real sockets, in three sections (`--only` picks some).

streaming: the IMS emulator (800 ms latency, 100 requests/s) and the gateway as subprocesses; unary
latency at idle; a long `StreamModerateImages` stream (throughput against the budget,
RequestLimitExceeded seen by the client, exactly-once answers) with unary calls issued while it runs;
the baseline users have without the gateway (a thread pool calling IMS through the official SDK with
its 1 s, 2 s, 4 s retry style), swept over concurrency; and the gateway's peak RSS while streaming
5 MB images, for two stream lengths.

local: the embedded backend's evaluation on images the bench makes from a seed (keyword recall, library
matches and false matches, QR decoding, neutral photographs blocked), then its images/s through the
gateway against a raw loop over the same models, unary latency by image size, and memory.

telemetry: unary throughput with tracing (OTLP to a loopback receiver) and metrics on against off.
"""
