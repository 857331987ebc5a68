"""The test suite. `tests.support` is what its modules share: registered here, before anything imports it,
so that its asserts are rewritten as the tests' own are and a failure shows its values."""

import pytest

pytest.register_assert_rewrite("tests.support")
