"""`python -m dlc.runtime.cli`, as the `dlc` command."""

import sys

from dlc.runtime.cli import main

sys.exit(main())
