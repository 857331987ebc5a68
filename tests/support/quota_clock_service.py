"""`python -m tests.support.quota_clock_service`: `python -m service` with its quotas' clock moved by the
seconds written in the file QUOTA_TEST_CLOCK_FILE names (read at every look), so that a test can roll the
day over in a running gateway. Test-only: production has no such seam."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from service import __main__ as service_main
from service.quotas import build

if __name__ == "__main__":
    offset_file = Path(os.environ.pop("QUOTA_TEST_CLOCK_FILE"))
    build.CLOCK = lambda: time.time() + float(offset_file.read_text(encoding="utf-8"))
    sys.exit(service_main.main())
