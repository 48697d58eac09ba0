"""Developer tools shipped with dlc (`python -m dlc.tools.fuzz`)."""
