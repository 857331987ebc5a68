"""What the tests share beyond their fixtures: credentials, settings and channels for an in-process
gateway, helper processes, request and file makers. Tests import these, never `tests.conftest` or another
test module."""
