"""Conventions of the command line: every flag explained, shell completion made from the
parser, and a did-you-mean for a mistyped flag or setting, located where it was written."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlc.runtime.cli import main, parser

ROOT = Path(__file__).parents[2]
XOR = str(ROOT / "examples" / "xor_mlp.dl")


def commands(p: argparse.ArgumentParser, path=("dlc",)):
    """(command path, parser) for dlc and every subcommand."""
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))


def test_every_argument_has_help_and_every_value_a_name_or_choices():
    missing = []
    for path, p in commands(parser()):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = " ".join(path) + " " + ("/".join(action.option_strings) or action.dest)
            if not action.help:
                missing.append(f"{name}: no help")
            if action.option_strings and action.nargs != 0 and action.metavar is None and action.choices is None:
                missing.append(f"{name}: no metavar")  # argparse would show the dest, upper-cased
    assert not missing, "\n".join(missing)


# ---- completion ---------------------------------------------------------------------------------------------
def test_completion_prints_a_bash_script_that_completes_commands_flags_and_files(tmp_path, capsys):
    pytest.importorskip("shtab")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "dlc.bash"
    script.write_text(capsys.readouterr().out)
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    def complete(*words):
        """What bash offers for the last of `words` after `dlc`, run in the repository's root."""
        line = " ".join(f"'{w}'" for w in ("dlc",) + words)
        r = subprocess.run(
            [
                "bash",
                "-c",
                f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words)}; '
                '_shtab_dlc; printf "%s\\n" "${COMPREPLY[@]}"',
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("tr") == ["train"]
    assert complete("co") == ["compile", "completion"]
    assert complete("train", "m.dl", "--log") == ["--log-every"]
    assert complete("train", "m.dl", "--backend", "n") == ["native"]
    assert complete("check", "examples/digits_c") == ["examples/digits_cnn.dl"]
    assert complete("completion", "") == ["bash", "zsh"]


def test_completion_prints_a_zsh_script(capsys):
    pytest.importorskip("shtab")
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef dlc") and "--log-every" in script and "completion" in script
    if shutil.which("zsh"):
        r = subprocess.run(["zsh", "-n"], input=script, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_completion_without_shtab_names_the_package(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "shtab", None)
    assert main(["completion", "bash"]) == 1
    assert capsys.readouterr().err == (
        "error: dlc completion needs the 'shtab' package: pip install \"dlc[completion]\"\n"
    )


def test_lsp_without_pygls_names_the_package(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygls", None)
    assert main(["lsp"]) == 1
    assert capsys.readouterr().err == "error: dlc lsp needs the 'pygls' package: pip install \"dlc[lsp]\"\n"


# ---- did you mean ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", XOR, "--optimiser", "adam"],
            "--optimiser: error: unrecognized arguments: --optimiser adam; did you mean '--optimizer'?",
        ),
        (["train", XOR, "--log-evry=5"], "unrecognized arguments: --log-evry=5; did you mean '--log-every'?"),
        (
            ["eval", XOR, "--weights", "w.npz", "--bach", "8"],
            "unrecognized arguments: --bach 8; did you mean '--batch'?",
        ),
        (["check", XOR, "extra"], "extra: error: unrecognized arguments: extra\n"),
    ],
)
def test_a_mistyped_flag_is_a_usage_error_of_its_command_with_a_did_you_mean(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err
    assert err.splitlines()[1].startswith(f"usage: dlc {argv[0]} ")  # after the error, which starts at the flag


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian", XOR], "trian: error: unknown command 'trian'; did you mean 'train'?\n"),
        (["--version", "xyz"], "xyz: error: unknown command 'xyz'\n"),
    ],
)
def test_a_mistyped_command_is_a_usage_error_with_a_did_you_mean(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.splitlines()[1].startswith("usage: dlc [-h]")


@pytest.mark.parametrize(
    "flag, value, message, caret",
    [
        (
            "--optimizer",
            "adma",
            "--optimizer:1:1: error: unknown optimizer 'adma'; did you mean 'adam'?",
            "    adma\n    ^^^^",
        ),
        (
            "--optimizer",
            "adma(lr = 0.1)",
            "--optimizer:1:1: error: unknown optimizer 'adma'; did you mean 'adam'?",
            "    adma(lr = 0.1)\n    ^^^^^^^^^^^^^^",
        ),
        (
            "--schedule",
            "cosine(warmpu = 1)",
            "--schedule:1:17: error: cosine has no option 'warmpu'; did you mean 'warmup'? (it takes: min_lr, warmup, warmup_steps, decay_steps)",
            "    cosine(warmpu = 1)\n                    ^",
        ),
        (
            "--data",
            "digit()",
            "--data:1:1: error: unknown data source 'digit'; did you mean 'digits'?",
            "    digit()\n    ^^^",
        ),
    ],
)
def test_a_mistyped_flag_value_is_located_in_the_flags_text(tmp_path, capsys, flag, value, message, caret):
    assert main(["train", XOR, flag, value, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and caret in err, err


@pytest.mark.parametrize(
    "typo, message, caret",
    [
        (
            "optimizer = adma(lr = 1e-3)",
            "9:14: error: unknown optimizer 'adma'; did you mean 'adam'?",
            "optimizer = adma(lr = 1e-3)\n                 ^^^^^^^^^^^^^^^\n",
        ),
        (
            "optimiser = adam()",
            "9:2: error: unknown train setting 'optimiser'; did you mean 'optimizer'?",
            "optimiser = adam()\n     ^^^^^^^^^^^^^^^^^^\n",
        ),
        (
            "h = dense(x, 3, activation = relu)",
            "4:31: error: dense has no argument named 'activation'; did you mean 'act'?",
            "h = dense(x, 3, activation = relu)\n                                  ^^^^",
        ),
    ],
)
def test_a_mistyped_setting_or_argument_in_the_file_is_located(tmp_path, capsys, typo, message, caret):
    layer, setting = (typo, "epochs = 1") if typo.startswith("h =") else ("h = dense(x, 3)", typo)
    src = (
        f"model m {{\n input x: f32[B, 64]\n target y: i32[B]\n {layer}\n loss sparse_cross_entropy(h, y)\n}}\n"
        f"train m {{\n data = digits(image = false)\n {setting}\n}}\n"
    )
    path = tmp_path / "m.dl"
    path.write_text(src)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:{message}") and caret in err, err


def test_python_dash_m_dlc_is_the_dlc_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dlc", "check", "missing.dl"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "missing.dl" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "dlc", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("dlc ")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", XOR, "--clip", "-1"], "--clip"),
        (["train", XOR, "--clip", "global_norm(nan)"], "--clip"),
        (["train", XOR, "--validation", "1"], "--validation"),
        (["train", XOR, "--validation", "0"], "--validation"),
        (["train", XOR, "--batch", "0"], "--batch"),
        (["train", XOR, "--epochs", "-1"], "--epochs"),
        (["train", XOR, "--seed", "-1"], "--seed"),
        (["train", XOR, "--lr", "-1"], "--lr"),
        (["train", XOR, "--optimizer", "sgd(lr = -1)"], "--optimizer"),
        (["train", XOR, "--data", "nowhere.npz"], "--data"),
        (["train", XOR, "--freeze", "nothing*"], "--freeze"),
        (["train", XOR, "--log-every", "0"], "--log-every"),
        (["eval", XOR, "--weights", "w.npz", "--batch", "0"], "--batch"),
        (["eval", XOR, "--weights", "TRAINED", "--data", "nowhere.npz"], "--data"),
        (["predict", XOR, "--weights", "TRAINED", "--data", "nowhere.npz"], "--data"),
        (["quantize", XOR, "--weights", "TRAINED", "--data", "digit()", "-o", "lib"], "--data"),
        (["summary", XOR, "--batch", "0"], "--batch"),
        (["summary", XOR, "--depth", "0"], "--depth"),
        (["build", XOR, "--train", "--seed", "-1", "-o", "lib"], "--seed"),
    ],
)
def test_an_error_in_a_flags_value_starts_at_the_flag_with_status_2(tmp_path, capsys, argv, flag):
    """Whichever part of dlc finds it (the argument parser, a setting's check, a data source), an error about a
    flag's value says the flag first, and is a usage error."""
    if "TRAINED" in argv:  # weights of the model, so that only the flag's value is wrong
        assert main(["train", XOR, "--epochs", "1", "--out", str(tmp_path / "trained"), "-q"]) == 0
        capsys.readouterr()
    where = {"lib": str(tmp_path / "lib"), "TRAINED": str(tmp_path / "trained" / "last.npz")}
    argv = [where.get(a, a) for a in argv]
    try:
        code = main([*argv, "--out", str(tmp_path / "run")] if argv[0] == "train" else argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{flag}:") and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
