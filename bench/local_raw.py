"""`python -m bench.local_raw IMAGES KEYWORDS --workers W`: the local backend's models without the gateway,
for the gateway's throughput to be compared with.

The same models, keyword libraries (no sample library) and default policy as the gateway, through
`analyze_image` in a thread pool as large as the gateway's worker pool. It runs in a process of its
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

from backends.local.analysis import Checks, analyze_image
from backends.local.imagelib import ImageLibrary
from backends.local.keywords import KeywordMatcher, load_libraries
from backends.local.models import Models
from backends.local.policy import load_policies

READY = "ready"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_raw", description=__doc__)
    parser.add_argument("images", type=Path, help="folder of images, used in name order")
    parser.add_argument("keywords", type=Path, help="folder of keyword libraries")
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    images = [path.read_bytes() for path in sorted(args.images.iterdir())]
    models = Models()
    models.warm_up()
    checks = Checks(models, KeywordMatcher(load_libraries(args.keywords)), ImageLibrary([]))
    analyze = functools.partial(
        analyze_image, interval=0, max_frames=0, policy=load_policies().default, checks=checks
    )
    print(READY, flush=True)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for line in sys.stdin:
            count = int(line)
            answers = list(pool.map(analyze, [images[index % len(images)] for index in range(count)]))
            print(len(answers), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
