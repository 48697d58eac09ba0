"""The test session's own set-up (tests/conftest.py): under pytest-xdist, the tests of an
xdist_group run on one worker, which the scheduler knows by the group's name after an `@`
in each test's node id (a pytest whose node ids pytest-xdist cannot suffix spreads a group,
and its expensive module fixtures, over every worker: pyproject.toml's test extra)."""
import pytest

pytestmark = pytest.mark.xdist_group("test_test_session")


def test_a_grouped_test_is_named_by_its_group_under_xdist(request):
    if hasattr(request.config, "workerinput") and request.config.getvalue("loadgroup"):
        assert request.node.nodeid.endswith("@test_test_session")
    else:        # in one process, or not by groups: no worker to keep it on
        assert "@" not in request.node.nodeid
