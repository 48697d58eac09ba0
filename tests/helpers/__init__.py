"""What several test files share, a module named for what it holds (docs/architecture.md, "Where
the tests live"); a test file imports one as `from helpers.programs import write`. conftest.py
holds only the session's pytest hooks."""
