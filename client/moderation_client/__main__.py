"""`python -m moderation_client`: the `moderate` command line."""

import sys

from moderation_client.cli import main

sys.exit(main())
