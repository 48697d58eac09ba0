"""The docs agree with the code: docs/architecture.md's module map names every module of
the package, by its path or, in a row of its folder, by its file name; the README maps the
repository's folders and links every page of docs/; the docs describe dlc and the machines
it runs on, with the dated measurements in benchmarks/README.md; the tutorial and the
cookbook run as written."""
import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from dlc.runtime.cli import main

from helpers import doc_blocks

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compiler", "runtime", "grammar", "tools", "editors")


def named_modules() -> set:
    """The module paths the map's rows name: `a/b/c.py`; `c.py` after `a/b/x.py` in the same
    cell; and `c.py` in the role of a folder's row (`a/b/`)."""
    named = set()
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (`[^|]*`[^|]*) \| (.*) \|$", line)
        if not m:
            continue
        folder = None
        for name in re.findall(r"`([^`]+)`", m.group(1)):
            if name.endswith("/"):
                folder = name.rstrip("/")
                named |= {f"{folder}/{n}" for n in re.findall(r"`([a-z0-9_]+\.py)`", m.group(2))}
            elif "/" in name:
                folder = name.rsplit("/", 1)[0]
                named.add(name)
            elif folder:
                named.add(f"{folder}/{name}")
    return named


def run_page(name: str) -> dict:
    """docs/NAME run as written (doc_blocks.run_page), each `$ dlc ...` line by main() here,
    which must succeed."""
    def run_dlc(argv: list) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 0, shlex.join(argv)
        return out.getvalue()
    return doc_blocks.run_page((ROOT / "docs" / name).read_text(encoding="utf-8"), name, run_dlc)


def test_the_module_map_names_every_module():
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if p.name != "__init__.py"}
    missing = sorted(modules - named_modules())
    assert not missing, f"docs/architecture.md's module map does not name: {', '.join(missing)}"


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch):
    """docs/tutorial.md, block by block in an empty folder: the files it says to save, its
    `$ dlc ...` commands (each must succeed) and its Python (one session); `dlc eval` of the
    checkpoint prints the test line `dlc train` printed."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    printed = run_page("tutorial.md")
    assert {"check", "train", "eval", "predict", "export"} <= set(printed)
    test_line = next(line for line in printed["train"].splitlines() if line.startswith("test: "))
    assert printed["eval"].strip() == test_line.removeprefix("test: ")
    assert os.path.getsize("predictions.csv") > 0


def test_the_cookbook_runs_as_written(tmp_path, monkeypatch):
    """docs/cookbook.md, as the tutorial: every recipe's files, commands and Python (whose
    asserts check what the recipes claim: a resumed run ends as an uninterrupted one, frozen
    weights do not move, padding changes no output, ONNX agrees)."""
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    printed = run_page("cookbook.md")
    assert {"check", "train", "export"} <= set(printed)
    assert {"points.onnx", "points.safetensors", "runs/resumed/last.npz", "runs/focal/last.npz"} <= {
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"no section ## {title}"
    return m.group(1)


def test_the_readme_maps_the_folders_and_links_every_page_of_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = section(readme, "Layout")
    assert "](docs/architecture.md)" in layout
    named = re.findall(r"`([a-z_]+/(?:[a-z_]+/)*)`", layout)
    assert named and all((ROOT / name).is_dir() for name in named), named
    tops = {name.split("/")[0] for name in named}
    assert {*PACKAGES, "examples", "benchmarks", "tests"} <= tops, tops
    docs = section(readme, "Documentation")
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"](docs/{p.name})" not in docs] == []


def test_the_readme_s_set_up_is_its_two_commands_and_a_line_on_ci():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("<!-- ci: test-setup -->"):readme.index("Then look inside and use the result:")]
    prose = re.sub(r"<!-- ci: [\w-]+ -->\n```sh\n.*?```\n", "", setup, flags=re.S).strip()
    assert prose.count("\n") <= 1 and "CI (`.ci/run`)" in prose and "](#tests)" in prose, prose
    assert "\n## Tests\n" in readme


def test_the_docs_describe_dlc_and_keep_their_measurements_dated_in_the_benchmarks():
    """docs/performance.md says what dlc's speed depends on and docs/native.md the backend's design
    and limits, without a dated measurement (those are benchmarks/README.md's "Measurement log",
    under headings that date them); no page names a page the repository lacks, nor the
    people or processes that shared a machine with a measurement."""
    for name in ("performance.md", "native.md"):
        assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", (ROOT / "docs" / name).read_text(encoding="utf-8")), name
    log = section((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8"), "Measurement log")
    entries = re.findall(r"^### (.*)", log, re.M)
    assert len(entries) >= 2 and all(re.match(r"20\d\d-\d\d-\d\d", e) for e in entries), entries
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        names = set(re.findall(r"`([\w./-]+\.md)`", text)) | set(re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)", text))
        missing = [n for n in names if not (ROOT / n).exists() and not (page.parent / n).exists()]
        assert missing == [], (page, missing)
        assert not re.findall(r"other (?:helpers|agents)|this project's machine", text), page


def test_the_deploy_page_shows_the_header_and_the_flags_dlc_build_has():
    """docs/deploy.md's header of the digits CNN has the lines of constants and of the
    training data that library.py writes for it, and its flag table every option of `dlc
    build --help`, with what --weights does without --embed-weights."""
    from types import SimpleNamespace
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.deploy.library import data_comment, description, header_constants
    from dlc.runtime.deploy.description import interface
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```c\n(.*?)```", page, re.S) if "typedef struct digits_cnn" in b)
    face = interface(load(ROOT / "examples" / "digits_cnn.dl"), None)
    lib = SimpleNamespace(name="digits_cnn", inputs=[t for t in face.inputs if t.name == "x"], outputs=face.outputs,
                          transform=False, data=face.data, target="host", weights=None, trainer=None)
    shown = [line for line in block.splitlines() if re.match(r"#define DIGITS_CNN_(INPUT_|OUTPUT_|TRANSFORM)", line)]
    assert shown == header_constants(lib)
    assert " * " + data_comment(lib) in block
    described = next(line for line in page.splitlines() if line.startswith('{"model": "digits_cnn"'))
    assert json.loads(described) == json.loads(description(lib))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["build", "--help"])
    helped = " ".join(out.getvalue().split())
    for flag in sorted(set(re.findall(r"(--[a-z][a-z-]+)", helped)) - {"--help", "--output"}):
        assert f"| `{flag}" in page or f", `{flag}" in page, flag
    assert "without it, only checked against the model" in helped
    row = next(line for line in page.splitlines() if line.startswith("| `--weights CKPT`"))
    assert "without, they are only checked against the model" in row
