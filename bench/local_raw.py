"""`python -m bench.local_raw IMAGES POLICY --workers W`: the local backend's models without the gateway,
for the gateway's throughput to be compared with.

The same models and policy as the gateway, through `analyze_image` and the policy's
default rules in a thread pool as large as the gateway's worker pool. It runs in a process of its
own, as the gateway does, so both have the same onnxruntime thread pools and a fresh heap, and the
bench reads its CPU time and memory from /proc as it reads the gateway's. It prints `ready` once the
models are loaded; then each line on stdin is a number of images to analyse (cycling through the
folder's images in name order, from the first), answered with the number analysed once all are done.
"""

from __future__ import annotations

import argparse
import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from moderation.v1.moderation_service_pb2 import ModerateImageResponse

from backends.local.analysis import analyze_image
from backends.local.models import Models
from service.policy.decide import decide
from service.policy.loading import load_policy
from service.policy.rules import Policy

READY = "ready"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_raw", description=__doc__)
    parser.add_argument("images", type=Path, help="folder of images, used in name order")
    parser.add_argument("policy", type=Path, help="the gateway's policy file")
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    images = [path.read_bytes() for path in sorted(args.images.iterdir())]
    models = Models()
    models.warm_up()
    analyze = functools.partial(_decided, load_policy(args.policy), models)
    print(READY, flush=True)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for line in sys.stdin:
            count = int(line)
            answers = list(pool.map(analyze, [images[index % len(images)] for index in range(count)]))
            print(len(answers), flush=True)
    return 0


def _decided(policy: Policy, models: Models, content: bytes) -> ModerateImageResponse:
    answer = analyze_image(content, interval=0, max_frames=0, models=models)
    return decide(policy.default, answer, policy.version)


if __name__ == "__main__":
    sys.exit(main())
