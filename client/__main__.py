"""`python -m client`: the `moderate` command line."""

import sys

from client.cli import main

sys.exit(main())
