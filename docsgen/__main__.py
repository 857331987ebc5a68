"""`python -m docsgen` (`make docs-reference`): rewrite every generated block of the docs."""

from __future__ import annotations

import sys

from docsgen.blocks import DOCS, rewrite
from docsgen.pages import PAGES


def main() -> int:
    for page, renderers in PAGES.items():
        changed = rewrite(DOCS / page, renderers)
        print(f"docs/{page} {'updated' if changed else 'is up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
