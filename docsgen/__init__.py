"""The docs site's generated parts: reference pages from the declarations, benchmark pages from the
benches' JSON. `python -m docsgen` (`make docs-reference`) rewrites them; tests fail when they drift."""
