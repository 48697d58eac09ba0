"""Subword tokenizers: a Hugging Face `tokenizer.json` (BPE, WordPiece or Unigram, read by the
`tokenizers` library, the optional extra dlc[text]) with the rules dlc adds to it.

    tok = load("tokenizer.json")                 # or a model folder holding one (Hugging Face's)
    batch = tok.encode(["a sentence", "another"], length=64)   # ids, mask, lengths: [N, 64], [N]
    tok.decode(batch.ids[0])                     # the text again, without the special tokens
    tok.to_meta(), Tokenizer.from_meta(meta)     # what a checkpoint keeps of it

Encoding is the library's own: its normalizer, pre-tokenizer and model, then its
post-processor's special tokens ([CLS] ... [SEP] for BERT, BOS/EOS where a template adds
them) and its truncation (which keeps those special tokens); dlc pads the rows, on the right.

The padding token, by the first rule that gives one (`pad_rule` says which):

1. the padding the tokenizer.json configures;
2. a folder's `tokenizer_config.json` or `special_tokens_map.json` "pad_token";
3. a token of the vocabulary named [PAD], <pad>, <|pad|> or <|padding|>;
4. the end-of-sequence token (`eos`), as transformers users give GPT-2 (`pad_token = eos_token`);
5. id 0.

Padding is never an error, and its id never matters to a model that reads the attention mask or
the lengths. The end-of-sequence token (`eos`): the folder's "eos_token", else the last special
token the post-processor appends to a sequence, else a special token named </s>, <|endoftext|>,
<eos>, [SEP] or [EOS]; the beginning (`bos`) likewise ("bos_token", the post-processor's first, <s>,
<|startoftext|>, <bos>, [CLS], [BOS]).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from dlc.compiler.errors import DlcError, Span, json_document
from dlc.compiler.frontend.summary import size_text

INSTALL = 'pip install "dlc[text]"'
FILE = "tokenizer.json"
SPECIAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # a Hugging Face folder's names of its tokens
PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>")
EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "[SEP]", "[EOS]")
BOS_NAMES = ("<s>", "<|startoftext|>", "<bos>", "[CLS]", "[BOS]")
KINDS = ("bpe", "wordpiece", "unigram")
# the most tokens `dlc tokenizer train` makes: the library reserves room for the vocabulary it
# is asked for up front, and a size beyond memory aborted the process; the largest published
# vocabularies are about a quarter of this
MOST_TOKENS = 1 << 20


def library(what: str):
    """The `tokenizers` module, or an error that says how to install it (`what`: what needs it)."""
    try:
        import tokenizers
    except ImportError:
        raise DlcError(f"{what} needs Hugging Face's tokenizers, which is not installed: {INSTALL}") from None
    return tokenizers


@dataclass
class Encoded:
    """A batch of texts as ids [N, L] int32 (padded with the pad id), the attention mask [N, L]
    int32 (1 on a token, 0 on padding), the lengths [N] int32 (the tokens of each, special
    tokens included) and the token type ids [N, L] int32 (0: the first text of a pair)."""

    ids: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    types: np.ndarray


class Tokenizer:
    """A `tokenizers.Tokenizer` with its padding token (`pad`, and `pad_rule`: the rule that chose
    it), its end and beginning tokens (`eos`, `bos`: ids or None) and the length its texts are cut
    to (`length`, None: the longest of a batch), and whether `encode` adds the post-processor's
    special tokens (`special`). `source` names where it came from, for messages. The library's
    own padding is off (`encode` pads its ids), and its truncation but while `encode` sets it."""

    special = True

    def __init__(self, tok, source: str, pad: int, pad_rule: str, eos, bos, length: int | None = None):
        self.tok, self.source, self.pad, self.pad_rule = tok, source, pad, pad_rule
        self.eos, self.bos, self.length = eos, bos, length
        self.tok.no_padding()
        self.tok.no_truncation()

    @classmethod
    def of(cls, tok, source: str, special: dict | None = None, length: int | None = None) -> "Tokenizer":
        """A library tokenizer with its tokens found by the rules (the module's doc; `special`: a
        folder's names of them); `length` by default its own truncation's, if it sets one."""
        special = special or {}
        pad, rule = _padding(tok, special)
        if length is None:
            length = (tok.truncation or {}).get("max_length")
        tok.no_padding()  # the post-processor's tokens of one text, found next, not its padding
        tok.no_truncation()
        eos = _special(tok, special, "eos_token", EOS_NAMES, -1)
        bos = _special(tok, special, "bos_token", BOS_NAMES, 0)
        if pad is None:
            pad, rule = (eos, "the end-of-sequence token") if eos is not None else (0, "id 0")
        return cls(tok, source, pad, rule, eos, bos, length)

    @property
    def vocab_size(self) -> int:
        """The ids it gives are 0 to vocab_size - 1 (added tokens included)."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts, length: int | None = None, special: bool | None = None) -> Encoded:
        """`texts` (a str or a list of them) encoded, truncated to `length` tokens (default
        `self.length`; None: none cut) by the library (its special tokens kept) and padded to
        that length, or to the longest. `special`: the post-processor's special tokens (default
        `self.special`)."""
        special = self.special if special is None else special
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DlcError(f"text {bad} to encode is {type(texts[bad]).__name__}, not a string")
        length = self.length if length is None else length
        if length is not None:
            self.tok.enable_truncation(max_length=length)
        try:
            found = self.tok.encode_batch(texts, add_special_tokens=special)
        except Exception as e:  # the library's errors (a Rust panic is a BaseException, not caught)
            raise DlcError(f"{self.source}: cannot encode the text: {e}") from None
        finally:
            self.tok.no_truncation()
        # padded here, not by the library: its padded rows would cross into Python as lists of
        # `length` ids each (and a mask's), where each text's own tokens are all there is to read
        lengths = np.fromiter(map(len, found), np.int32, len(found))
        width = length if length is not None else int(lengths.max(initial=0))
        _require_memory(self.source, len(found), width)
        mask = np.arange(width, dtype=np.int32) < lengths[:, None]  # padding on the right, as the library's
        tokens = int(lengths.sum())
        ids = np.full(mask.shape, self.pad, np.int32)
        ids[mask] = np.fromiter(itertools.chain.from_iterable(e.ids for e in found), np.int32, tokens)
        types = np.zeros(mask.shape, np.int32)
        types[mask] = np.fromiter(itertools.chain.from_iterable(e.type_ids for e in found), np.int32, tokens)
        return Encoded(ids, mask.astype(np.int32), lengths, types)

    def corpus(self, text: str) -> np.ndarray:
        """The int32 ids of a corpus, without special tokens: its lines (each with its line break)
        encoded in parallel, one after another."""
        found = self.tok.encode_batch(text.splitlines(keepends=True), add_special_tokens=False)
        return np.fromiter(itertools.chain.from_iterable(e.ids for e in found), np.int32)

    def decode(self, ids, special: bool = False) -> str:
        """The text of ids (any shape; read in order), without the special tokens (padding among
        them) unless `special`."""
        a = np.asarray(ids)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise DlcError(f"decode: token ids must be integers, got {a.dtype}")
        a = a.ravel().astype(np.int64)
        bad = (a < 0) | (a >= self.vocab_size)
        if np.any(bad):
            raise DlcError(
                f"decode: id {int(a[np.argmax(bad)])} is outside the vocabulary of {self.vocab_size} tokens "
                f"of {self.source}"
            )
        return self.tok.decode(a.tolist(), skip_special_tokens=not special)

    def same_ids(self, other: "Tokenizer") -> bool:
        """Whether `other` gives every text the ids this one gives: the same tokenizer.json (its
        padding and truncation aside, which dlc sets at each `encode`)."""
        return json.loads(self.tok.to_str()) == json.loads(other.tok.to_str())

    def to_meta(self) -> dict:
        """What a checkpoint keeps: the tokenizer.json, its padding, end and beginning tokens,
        length and special tokens, which `from_meta` reads back as it was."""
        return {
            "json": self.tok.to_str(),
            "pad": self.pad,
            "pad_rule": self.pad_rule,
            **{k: v for k, v in (("eos", self.eos), ("bos", self.bos), ("length", self.length)) if v is not None},
            **({} if self.special else {"special": False}),
        }

    @classmethod
    def from_meta(cls, meta: dict, source: str = "the checkpoint's tokenizer") -> "Tokenizer":
        """The tokenizer `to_meta` kept, as it was."""
        pad, rule = int(meta["pad"]), str(meta.get("pad_rule", ""))
        tok = cls(
            _parse(meta.get("json"), source), source, pad, rule, meta.get("eos"), meta.get("bos"), meta.get("length")
        )
        tok.special = meta.get("special", True) is not False
        return tok


def _padding(tok, special: dict) -> tuple:
    """(the padding id, the rule that chose it) by the first three rules, or (None, None)."""
    padding = tok.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"]), "the tokenizer's padding"
    named = _token_name(special.get("pad_token"))
    if named is not None and tok.token_to_id(named) is not None:
        return tok.token_to_id(named), "the folder's pad_token"
    for name in PAD_NAMES:
        if tok.token_to_id(name) is not None:
            return tok.token_to_id(name), f"the token {name}"
    return None, None


def _special(tok, special: dict, key: str, names: tuple, end: int) -> int | None:
    """The id of a folder's `key` token, else the special token the post-processor puts at `end`
    (0 first, -1 last) of a sequence, else the first special token of `names` the tokenizer has."""
    named = _token_name(special.get(key))
    if named is not None and tok.token_to_id(named) is not None:
        return tok.token_to_id(named)
    if tok.post_processor is not None:
        sample = tok.encode("a")
        if sample.special_tokens_mask and sample.special_tokens_mask[end]:
            return sample.ids[end]
    added = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    return next((tok.token_to_id(name) for name in names if name in added), None)


def _token_name(v) -> str | None:
    """A token's name in tokenizer_config.json: a string, or an added token's {"content": ...}."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _parse(text, source: str):
    """A tokenizers.Tokenizer of a tokenizer.json's text; damaged JSON or a format the library
    does not read is an error naming `source`."""
    lib = library(f"reading the tokenizer {source}")
    if not isinstance(text, str):
        raise DlcError(f"{source} is not a tokenizer: it holds no tokenizer.json")
    try:
        doc = json_document(text)
    except ValueError as e:
        raise DlcError(f"{source} is not JSON ({e})") from None
    if not isinstance(doc, dict) or "model" not in doc:
        raise DlcError(f"{source} is not a tokenizer.json: it has no \"model\" (a BPE, WordPiece or Unigram)")
    try:
        tok = lib.Tokenizer.from_str(text)
    except Exception as e:  # the library's reader says what it could not read
        raise DlcError(f"{source} is not a tokenizer the tokenizers library reads ({str(e).splitlines()[0]})") from None
    return tok


def load(path, base_dir=".", span: Span | None = None, length: int | None = None) -> Tokenizer:
    """The tokenizer of a tokenizer.json file, or of a folder holding one (its
    tokenizer_config.json and special_tokens_map.json name its special tokens), relative to
    `base_dir`; errors at `span` (the setting that named it). A Tokenizer (a model's, which
    predict and eval give texts(...)) is itself, cut to `length` when given."""
    if isinstance(path, Tokenizer):
        path.length = path.length if length is None else length
        return path
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise DlcError(f"a tokenizer is a tokenizer.json file or a folder holding one, in quotes, got {path!r}", span)
    p = pathlib.Path(path).expanduser()
    p = p if p.is_absolute() else pathlib.Path(base_dir) / p
    folder = p if p.is_dir() else None
    if folder is not None:
        p = folder / FILE
    if not p.is_file():
        where = f"{folder} holds no {FILE}" if folder is not None else f"tokenizer file not found: {p}"
        raise DlcError(where, span)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DlcError(f"cannot read the tokenizer {p}: {getattr(e, 'strerror', None) or e}", span) from None
    special = {}
    for name in SPECIAL_FILES if folder is not None else ():
        f = folder / name
        if f.is_file():
            try:
                doc = json_document(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise DlcError(f"cannot read {f} ({e})", span) from None
            special = (doc if isinstance(doc, dict) else {}) | special
    try:
        return Tokenizer.of(_parse(text, str(p)), str(p), special, length)
    except DlcError as e:
        e.span = e.span or span
        raise


def _require_memory(source: str, texts: int, width: int):
    """Refuse texts padded to a width whose arrays (ids, types and the mask, and the mask's
    bools) the memory available cannot hold: a `length` far beyond the texts' had numpy ask for
    them, and the system end the process."""
    from dlc.runtime.engines.budget import free  # (the engines' planning, imported when texts are encoded)

    need, available = texts * width * 13, free()
    if available is not None and need > available:
        raise DlcError(
            f"{source}: {texts} texts padded to {width} tokens each need {size_text(need)}, more than "
            f"the {size_text(available)} of memory available: give a smaller length"
        )


def train(files: list, kind: str, vocab: int, lower: bool = False, min_frequency: int = 2) -> Tokenizer:
    """A tokenizer trained by the library on text files: BPE on bytes (GPT-2's: any text encodes,
    <|endoftext|> its end of text), WordPiece (BERT's: [CLS] ... [SEP], [PAD], [UNK], [MASK]) or
    Unigram (SentencePiece's: <s> ... </s>, <pad>, <unk>), at most `vocab` tokens."""
    lib = library("dlc tokenizer train")
    m, pre, dec, proc, norm, trainers = (
        lib.models,
        lib.pre_tokenizers,
        lib.decoders,
        lib.processors,
        lib.normalizers,
        lib.trainers,
    )
    if kind == "bpe":
        tok = lib.Tokenizer(m.BPE())
        tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
        tok.decoder = dec.ByteLevel()
        tok.post_processor = proc.ByteLevel(trim_offsets=False)
        specials = ["<|endoftext|>"]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "wordpiece":
        tok = lib.Tokenizer(m.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre.BertPreTokenizer()
        tok.decoder = dec.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab, min_frequency=min_frequency, special_tokens=specials, show_progress=False
        )
    else:
        tok = lib.Tokenizer(m.Unigram())
        tok.pre_tokenizer = pre.Metaspace()
        tok.decoder = dec.Metaspace()
        specials = ["<pad>", "<unk>", "<s>", "</s>"]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    if lower:
        tok.normalizer = norm.Lowercase()
    try:
        tok.train([str(f) for f in files], trainer)
    except Exception as e:
        raise DlcError(f"the tokenizers library could not train a {kind} tokenizer: {e}") from None
    if kind == "wordpiece":
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = proc.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    elif kind == "unigram":
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = proc.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
    return Tokenizer.of(tok, f"the trained {kind} tokenizer")
