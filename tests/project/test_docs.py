"""The docs agree with the code: docs/architecture.md's module map names every module of
the package, by its path or, in a row of its folder, by its file name; the README maps the
repository's folders and links every page of docs/; measured figures are only on
benchmarks/README.md, one dated result per benchmark; every path the docs name exists; the
tutorial and the cookbook run as written."""

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
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }
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
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
    }


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
    setup = readme[readme.index("<!-- ci: test-setup -->") : readme.index("Then look inside and use the result:")]
    prose = re.sub(r"<!-- ci: [\w-]+ -->\n```sh\n.*?```\n", "", setup, flags=re.S).strip()
    assert prose.count("\n") <= 1 and "CI (`.ci/run`)" in prose and "](#tests)" in prose, prose
    assert "\n## Tests\n" in readme


def test_no_page_names_a_page_the_repository_lacks_nor_who_shared_a_machine():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        names = set(re.findall(r"`([\w./-]+\.md)`", text)) | set(re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)", text))
        missing = [n for n in names if not (ROOT / n).exists() and not (page.parent / n).exists()]
        assert missing == [], (page, missing)
        assert not re.findall(r"other (?:helpers|agents)|this project's machine", text), page


def heading_anchors(text: str) -> set:
    """The anchors GitHub gives the headings of a Markdown page (outside fenced blocks)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_link_to_a_heading_finds_it():
    """A link `page.md#anchor` (or `#anchor` on the same page) between the pages names a heading
    of that page."""
    anchors = {page.resolve(): heading_anchors(page.read_text(encoding="utf-8")) for page in PAGES}
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", page.read_text(encoding="utf-8")):
            linked = (page.parent / target).resolve() if target else page.resolve()
            if linked in anchors and anchor not in anchors[linked]:
                broken.append((page.relative_to(ROOT).as_posix(), f"{target}#{anchor}"))
    assert broken == []


BENCHMARKS = ROOT / "benchmarks" / "README.md"

# A measured figure: a number with a unit of time or of rate, a speed-up, or a share of a
# peer's time. "N min N s" counts twice; a range ("3–8 ms") once.
NUMBER = r"(?<![\w.·/])\d+(?:[.,]\d+)*(?:\s*[–-]\s*\d+(?:[.,]\d+)*)?"
TIME = r"(?:ns|µs|us|ms|s|sec|min|h|seconds?|minutes?|hours?)(?![\w/-])"
RATE = r"(?:[GTMK]?FLOP/s|[GMK]i?B/s|(?:images|tokens|samples|steps|examples|elements|calls)/s|ms/step)"
PEER = r"(?:PyTorch|torch|`torch\.compile`|onnxruntime|JAX|OpenBLAS|numpy)"
FIGURE = re.compile(
    rf"{NUMBER}\s*(?:{RATE}|{TIME})|{NUMBER}\s*[x×]\s+(?:faster|slower)"
    rf"|{NUMBER}\s*%\s+(?:faster|slower|less time|more time)|{NUMBER}\s*(?:[x×]|of)\s+{PEER}"
)
# A table of ratios against peers: a header cell such as `dlc/torch` or `C/onnxruntime`.
PEERS_TABLE = re.compile(r"^\|.*\b\w+/(?:torch|ort|onnxruntime|best|jax)\w*\b.*\|$", re.M | re.I)
# What a figure may be on any page: a setting, not a measurement. Each is a pattern of the
# words around it, so a measurement beside them still counts:
SETTING = (
    re.compile(r"\b(?:every|timeout|deadline|budget|target|limit|default|up to|at most)\b[^.;|()]{0,25}$", re.I),
    # a period, limit or default: "every 0.25 s", "(the target: 100 ms)", "for up to 3 s"
    re.compile(r"^\s*(?:timeout|deadline|budget|target|debounce|probe|window|limit)\b", re.I),
    # the same, named after it: "a 30 s timeout", "the 3 s probe"
    re.compile(r"^[^.;|]{0,15}\(CODE"),
    # a constant of the code that holds it: "2 s (`BUILD_SECONDS` ...)"
)
ROUGH = re.compile(r"\babout\s*$")  # a rough duration in words: "about 10 minutes" (how long the tests take)
# The pages this test does not hold: none.
OTHERS: set = set()


def prose(text: str) -> str:
    """TEXT without what it quotes: fenced blocks (a command's output, a program) and inline
    code (a flag, a printed line, a constant), each code span a word `CODE`; lines kept."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: "CODE" + "\n" * m.group(0).count("\n"), text, flags=re.S)


def measured_figures(text: str) -> list:
    """(line, figure) for each measured figure of TEXT's prose, a setting's excepted."""
    text = prose(text)
    found = []
    for m in FIGURE.finditer(text):
        before, after = text[: m.start()].replace("\n", " "), text[m.end() :].replace("\n", " ")
        if any(p.search(before) for p in SETTING[:1]) or any(p.match(after) for p in SETTING[1:]):
            continue
        if ROUGH.search(before) and re.search(r"(?:minutes?|seconds?|hours?)$", m.group(0)):
            continue
        found.append((text.count("\n", 0, m.start()) + 1, m.group(0)))
    found += [(text.count("\n", 0, m.start()) + 1, "a table of ratios to peers") for m in PEERS_TABLE.finditer(text)]
    return found


def test_the_detector_of_measured_figures_tells_them_from_settings():
    assert [
        f
        for _, f in measured_figures(
            "a step took 3.1 ms, 180 GFLOP/s; 2–4× faster; 0.84 of PyTorch eager's; 1.5× onnxruntime's; 12 % less time"
        )
    ] == ["3.1 ms", "180 GFLOP/s", "2–4× faster", "0.84 of PyTorch", "1.5× onnxruntime", "12 % less time"]
    assert (
        measured_figures(
            "a 30 s timeout; every 0.25 s; `--log-every 10`; (the target: 100 ms); 2 s (`BUDGET`)"
            "\n```\nepoch 1/3  0.61 s  15 ms/step\n```\nbatches of 32, min-max; about 10 minutes"
        )
        == []
    )
    assert measured_figures("| model | dlc/torch |\n|---|---|\n| mlp | 0.5 |") == [(1, "a table of ratios to peers")]


def test_measured_figures_are_only_on_the_benchmark_page():
    """A time or a rate that dlc was measured at is a benchmark's result, dated with its
    machine on benchmarks/README.md; the other pages say what holds dlc's speed and point
    there. Settings (periods, limits, defaults, timeouts, targets) are not measurements."""
    for page in PAGES:
        if page == BENCHMARKS or page.name in OTHERS:
            continue
        found = measured_figures(page.read_text(encoding="utf-8"))
        assert found == [], (page.relative_to(ROOT).as_posix(), found)


def test_each_benchmark_has_one_dated_result_on_the_benchmark_page():
    """Every benchmark script the page names (one with a `__main__`) has exactly one
    subsection of "## Results" with a `Date:` and a `Machine:` line and its table or printed
    output, or is listed in the line of those with no table recorded; nothing else."""
    page = BENCHMARKS.read_text(encoding="utf-8")
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text(encoding="utf-8")}
    named = {s for s in scripts if f"`{s}`" in page}
    results = section(page, "Results")
    counts = {}
    for part in re.split(r"^### ", results, flags=re.M)[1:]:
        head, body = part.split("\n", 1)
        for script in re.findall(r"`(\w+\.py)`", head):
            counts[script] = counts.get(script, 0) + 1
        assert re.search(r"^Date: .*\b20\d\d-\d\d-\d\d\b", body, re.M), head
        assert re.search(r"^Machine: \S", body, re.M), head
        assert re.search(r"^(?:\|.*\|$|```$)", body, re.M), head
    none = re.search(r"^No table recorded: (.*?)\n\n", results, re.S | re.M)
    unrecorded = set(re.findall(r"`(\w+\.py)`", none.group(1)))
    assert {s: n for s, n in counts.items() if n != 1} == {}
    assert set(counts) & unrecorded == set()
    assert named == set(counts) | unrecorded, (named, set(counts) | unrecorded)
    assert "## Measurement log" not in page


# A path the docs name: from a folder of the repository's root to a file or a folder (not a unit after a
# number: "261.4 examples/s").
PATH = re.compile(
    r"(?<![\w./-])(?<!\d )(?:compiler|runtime|grammar|tools|editors|tests|benchmarks|examples|docs|\.ci)/[\w.*<>/-]*"
)
# Named on the pages that are edited with the code they map, awaiting their owner's edit: none.
AWAITING: set = set()


def test_every_path_the_docs_name_exists():
    """Each file or module path of the pages exists in the tree: as written, as a module
    (`.py` added), or beside the page. A placeholder (`NAME`, `<kind>`) or a glob matches at
    least one file, and a path through `runs/` is what a training run writes."""
    missing = []
    for page in PAGES:
        for path in sorted(set(PATH.findall(page.read_text(encoding="utf-8")))):
            path = path.rstrip(".,:;")
            if "/runs/" in f"/{path}" or (page.relative_to(ROOT).as_posix(), path) in AWAITING:
                continue
            pattern = re.sub(r"<\w+>|\b[A-Z]{2,}\b", "*", path)
            if not any(
                any(base.glob(p)) if "*" in p else (base / p).exists()
                for base in (ROOT, page.parent)
                for p in (pattern, pattern + ".py")
            ):
                missing.append((page.relative_to(ROOT).as_posix(), path))
    assert missing == []


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
    lib = SimpleNamespace(
        name="digits_cnn",
        inputs=[t for t in face.inputs if t.name == "x"],
        outputs=face.outputs,
        transform=False,
        data=face.data,
        target="host",
        weights=None,
        trainer=None,
    )
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
