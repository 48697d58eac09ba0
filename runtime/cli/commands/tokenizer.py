"""`dlc tokenizer train`: a subword tokenizer trained on a corpus, written as a tokenizer.json."""

from __future__ import annotations

import codecs
from pathlib import Path

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.cli.arguments import whole
from dlc.runtime.data.tokenizer import KINDS, MOST_TOKENS, train

# the most times --min-frequency may ask a pair to be seen: the library counts in 64 bits (a
# larger number was an OverflowError), and no corpus holds a pair four billion times
MOST_SEEN = (1 << 32) - 1

HELP = "train a subword tokenizer (BPE, WordPiece, Unigram) on text files: a tokenizer.json"


def arguments(p):
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, help="train")
    t = actions.add_parser("train", help="train a tokenizer on UTF-8 text files and write its tokenizer.json")
    t.add_argument("files", nargs="+", metavar="CORPUS", help="UTF-8 text files to learn the tokens of")
    t.add_argument(
        "--kind",
        choices=KINDS,
        default="bpe",
        help="bpe: byte-level BPE as GPT-2's (default); wordpiece: BERT's, with [CLS] ... [SEP]; "
        "unigram: SentencePiece's, with <s> ... </s>",
    )
    t.add_argument(
        "--vocab",
        type=whole(1, MOST_TOKENS, what=" of tokens"),
        default=8000,
        metavar="N",
        help=f"at most N tokens, N up to {MOST_TOKENS:,} (default 8000)",
    )
    t.add_argument(
        "--min-frequency",
        dest="min_frequency",
        type=whole(1, MOST_SEEN, what=" of times"),
        default=2,
        metavar="N",
        help="a merge (BPE, WordPiece) is learnt from pairs seen at least N times (default 2)",
    )
    t.add_argument("--lower", action="store_true", help="lowercase the text first (the tokenizer then always does)")
    t.add_argument("-o", "--output", required=True, metavar="FILE", help="the tokenizer.json to write")


def run(args):
    for f in args.files:
        _check_corpus(Path(f))
    tok = train(args.files, args.kind, args.vocab, args.lower, args.min_frequency)
    out = Path(args.output)
    try:
        tok.tok.save(str(out))
    except Exception as e:  # the library's error writing the file
        raise DlcError(f"cannot write {out}: {e}", Span.whole(out)) from None
    print(f"wrote {out}: a {args.kind} tokenizer of {tok.vocab_size} tokens, padding with {tok.pad_rule}")


def _check_corpus(path: Path):
    """A corpus file that exists and is UTF-8 text, read in pieces (the library's own error names no file)."""
    if not path.is_file():
        raise DlcError("no such corpus file", Span.whole(path))
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while piece := f.read(1 << 20):
                decoder.decode(piece)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise DlcError(f"the corpus is not UTF-8 text ({e.reason})", Span.whole(path)) from None
    except OSError as e:
        raise DlcError(f"cannot read the corpus: {e.strerror}", Span.whole(path)) from None
