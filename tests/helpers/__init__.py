"""What several test files share, a module per area (conftest.py holds the fixtures)."""
