"""`python -m dlc ...` is the `dlc` command, for an environment whose scripts are not on PATH."""

from dlc.runtime.cli import main

raise SystemExit(main())
