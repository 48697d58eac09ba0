"""What `dlc` says when it refuses: the message of a usage error (exit 2) and of a clear error (exit 1)."""

import pytest

from dlc.runtime.cli import main


def usage_error(argv, capsys) -> str:
    """The message of an argparse usage error (exit 2) for argv."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: dlc" in err, err
    return next(line for line in err.splitlines() if "error: " in line)


def failure(argv, capsys) -> str:
    """The message of a clear error (exit 1) for argv."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and "Traceback" not in err, err
    return err


def flag_error(argv, capsys) -> str:
    """The message of an error located at a flag's value (exit 2, the flag first: `--data:1:1: error: ...`)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("--") and "internal error" not in err and "Traceback" not in err, err
    return err
