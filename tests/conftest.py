"""Compiled native code goes to a cache of this test session, not the user's."""
import os
import tempfile

os.environ.setdefault("DLC_CACHE_DIR", tempfile.mkdtemp(prefix="dlc-test-cache-"))
