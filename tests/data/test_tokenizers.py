"""Subword tokenizers (runtime/data/tokenizer.py): ids equal to the `tokenizers` library's own
encoding, padding, truncation that keeps the special tokens, masks and lengths; the padding rule of
a tokenizer without a padding token (GPT-2's); the checkpoint's copy; `dlc tokenizer train`; and a
located error for a missing or damaged tokenizer file."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")  # the optional extra dlc[text], which dlc[test] installs

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.cli import main
from dlc.runtime.data import tokenizer as T

from helpers.cli import failure, usage_error

SENTENCES = [
    "the film was wonderful and the music was moving",
    "a dull plot, clumsy acting; I hated it!",
    "Ünïcödé words and emoji 🎬 survive byte-level BPE",
    "short",
]
SPAN = Span("train.dl", 4, 20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = np.random.default_rng(0)
    words = " ".join(SENTENCES).split()
    path.write_text("\n".join(" ".join(rng.choice(words, 9)) for _ in range(300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=T.KINDS)
def trained(request, corpus):
    return T.train([corpus], request.param, 120)


def gpt2_like() -> "tokenizers.Tokenizer":
    """GPT-2's layout: byte-level BPE, <|endoftext|> its only special token, no padding, no template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 20, trainer)
    return tok


def test_ids_are_the_librarys_own_encoding(trained):
    lib = tokenizers.Tokenizer.from_str(trained.tok.to_str())
    got = trained.encode(SENTENCES)
    for row, sentence in enumerate(SENTENCES):
        want = lib.encode(sentence).ids
        assert got.lengths[row] == len(want)
        assert got.ids[row, : len(want)].tolist() == want
        assert (got.ids[row, len(want) :] == trained.pad).all()
        assert got.mask[row].tolist() == [1] * len(want) + [0] * (got.ids.shape[1] - len(want))
    assert got.ids.shape[1] == max(len(lib.encode(s).ids) for s in SENTENCES)  # padded to the longest
    assert got.ids.dtype == got.mask.dtype == got.lengths.dtype == np.int32


@pytest.mark.parametrize("length", [None, 6, 40])
def test_padded_rows_are_the_librarys_own_padding(trained, length):
    """dlc pads the rows itself: ids, mask and token types as the library's own padding and truncation give them."""
    lib = tokenizers.Tokenizer.from_str(trained.tok.to_str())
    if length is not None:
        lib.enable_truncation(max_length=length)
    lib.enable_padding(pad_id=trained.pad, length=length)
    want = lib.encode_batch(SENTENCES)
    got = trained.encode(SENTENCES, length=length)
    assert got.ids.tolist() == [e.ids for e in want]
    assert got.mask.tolist() == [e.attention_mask for e in want]
    assert got.types.tolist() == [e.type_ids for e in want]
    assert got.lengths.tolist() == [sum(e.attention_mask) for e in want]
    assert got.types.dtype == np.int32


def test_a_templates_token_types_are_kept(corpus):
    """A template that gives a single text token type 1 (its [CLS] 0): the types are the template's, padding 0."""
    tok = T.train([corpus], "wordpiece", 120)
    cls, sep = tok.tok.token_to_id("[CLS]"), tok.tok.token_to_id("[SEP]")
    tok.tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    got = tok.encode(SENTENCES[:2] + ["short"], length=12)
    for row, n in enumerate(got.lengths):
        assert got.types[row].tolist() == [0] + [1] * (n - 1) + [0] * (12 - n)


def test_truncation_keeps_the_special_tokens_and_pads_to_the_length(corpus):
    tok = T.train([corpus], "wordpiece", 120)
    cls, sep = tok.tok.token_to_id("[CLS]"), tok.tok.token_to_id("[SEP]")
    got = tok.encode(SENTENCES, length=6)
    assert got.ids.shape == (4, 6)
    assert (got.ids[:, 0] == cls).all()
    for row, n in enumerate(got.lengths):
        assert got.ids[row, n - 1] == sep  # the library's truncation: [SEP] kept at the end
    assert tok.bos == cls and tok.eos == sep and tok.pad == tok.tok.token_to_id("[PAD]")
    short = tok.encode("short", length=6)
    assert short.lengths.tolist() == [len(tok.tok.encode("short").ids)] and short.ids.shape == (1, 6)
    assert tok.encode(SENTENCES, length=6, special=False).ids[0, 0] != cls


def test_decode_is_the_text_back_without_special_tokens(trained):
    got = trained.encode(SENTENCES[:2], length=64)
    for row in range(2):
        assert trained.decode(got.ids[row]) == tokenizers.Tokenizer.from_str(trained.tok.to_str()).decode(
            got.ids[row].tolist()
        )
    with pytest.raises(DlcError, match=rf"id {trained.vocab_size} is outside the vocabulary of {trained.vocab_size}"):
        trained.decode([trained.vocab_size])


def test_a_tokenizer_without_padding_pads_with_its_end_of_text(tmp_path):
    """GPT-2's tokenizer has no padding token: it pads with <|endoftext|>, as transformers users set
    pad_token = eos_token, and the mask and lengths say where the text ends."""
    lib = gpt2_like()
    lib.save(str(tmp_path / "tokenizer.json"))
    tok = T.load(tmp_path)  # a folder holding tokenizer.json
    eot = lib.token_to_id("<|endoftext|>")
    assert (tok.pad, tok.eos, tok.bos) == (eot, eot, None)
    assert tok.pad_rule == "the end-of-sequence token"
    got = tok.encode(SENTENCES)
    assert got.ids[3, got.lengths[3] :].tolist() == [eot] * (got.ids.shape[1] - got.lengths[3])
    assert got.ids[2, : got.lengths[2]].tolist() == lib.encode(SENTENCES[2]).ids
    assert tok.decode(got.ids[2]) == SENTENCES[2]


def test_a_folders_special_tokens_map_names_the_padding(tmp_path):
    lib = gpt2_like()
    lib.add_special_tokens(["<|pad_here|>"])
    lib.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "<|pad_here|>"}}))
    tok = T.load(tmp_path)
    assert tok.pad == lib.token_to_id("<|pad_here|>") and tok.pad_rule == "the folder's pad_token"


def test_a_configured_padding_and_truncation_are_the_tokenizers_own(tmp_path):
    lib = gpt2_like()
    lib.enable_padding(pad_id=5, pad_token=lib.id_to_token(5))
    lib.enable_truncation(max_length=6)
    lib.save(str(tmp_path / "tok.json"))
    tok = T.load(tmp_path / "tok.json")
    assert (tok.pad, tok.pad_rule, tok.length) == (5, "the tokenizer's padding", 6)
    assert tok.encode(SENTENCES).ids.shape == (4, 6) and tok.encode(SENTENCES, length=9).ids.shape == (4, 9)
    assert T.load(tmp_path / "tok.json", length=3).encode(SENTENCES).ids.shape == (4, 3)


def test_the_checkpoints_copy_encodes_alike(trained):
    trained.length = 7
    meta = json.loads(json.dumps(trained.to_meta()))  # as a checkpoint's JSON keeps it
    again = T.Tokenizer.from_meta(meta)
    for a, b in zip(vars(trained.encode(SENTENCES)).values(), vars(again.encode(SENTENCES)).values()):
        assert np.array_equal(a, b)
    assert again.encode(SENTENCES).ids.shape == (4, 7)
    assert (again.pad, again.eos, again.bos) == (trained.pad, trained.eos, trained.bos)
    trained.special = False  # texts(..., special = false): new texts are encoded without them too
    again = T.Tokenizer.from_meta(json.loads(json.dumps(trained.to_meta())))
    assert again.special is False
    assert again.encode(SENTENCES[0]).ids[0, 0] == trained.tok.encode(SENTENCES[0], add_special_tokens=False).ids[0]


def test_corpus_ids_are_each_lines_encoding_in_order(corpus):
    tok = T.train([corpus], "bpe", 300)
    text = "the film was wonderful\nshort\n\na dull plot"
    want = [i for line in text.splitlines(keepends=True) for i in tok.tok.encode(line, add_special_tokens=False).ids]
    assert tok.corpus(text).tolist() == want
    assert tok.decode(tok.corpus(text)) == text


@pytest.mark.parametrize(
    "write, message",
    [
        (None, "tokenizer file not found"),
        ("{not json", "is not JSON"),
        pytest.param("[" * 10**5 + "]" * 10**5, "is not JSON", id="nested-deeply"),
        ('{"version": "1.0"}', 'has no "model"'),
        ('{"model": {"type": "Nonsense"}}', "is not a tokenizer the tokenizers library reads"),
        ('["a", "list"]', 'has no "model"'),
    ],
)
def test_a_missing_or_damaged_tokenizer_file_is_located(tmp_path, write, message):
    path = tmp_path / "tok.json"
    if write is not None:
        path.write_text(write)
    with pytest.raises(DlcError) as info:
        T.load("tok.json", tmp_path, SPAN)
    assert message in info.value.message and info.value.span == SPAN


def test_without_the_library_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    gpt2_like().save(str(tmp_path / "tok.json"))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed: importing it fails
    with pytest.raises(
        DlcError,
        match=r'reading the tokenizer .*tok.json needs Hugging Face\'s tokenizers, which is not installed: pip install "dlc\[text\]"',
    ):
        T.load(tmp_path / "tok.json")


def test_a_checkpoints_damaged_tokenizer_is_named(tmp_path):
    with pytest.raises(DlcError, match="the tokenizer of run/best.npz is not JSON"):
        T.Tokenizer.from_meta({"json": "{cut", "pad": 0}, "the tokenizer of run/best.npz")


def test_a_folder_without_a_tokenizer_is_refused(tmp_path):
    with pytest.raises(DlcError, match="holds no tokenizer.json") as info:
        T.load(tmp_path, span=SPAN)
    assert info.value.span == SPAN


@pytest.mark.parametrize("kind", T.KINDS)
def test_dlc_tokenizer_train_writes_a_tokenizer_json(tmp_path, corpus, capsys, kind):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(corpus), "--kind", kind, "--vocab", "150", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    lib = tokenizers.Tokenizer.from_file(str(out))
    assert f"a {kind} tokenizer of {lib.get_vocab_size()} tokens" in said
    most = 256 + 1 if kind == "bpe" else 150  # byte-level BPE keeps its 256 bytes whatever the vocabulary
    assert 0 < lib.get_vocab_size() <= most
    assert T.load(out).encode(SENTENCES[0]).ids[0].tolist() == lib.encode(SENTENCES[0]).ids


def test_dlc_tokenizer_train_refuses_sizes_beyond_the_librarys(tmp_path, corpus, capsys):
    """The library reserves the vocabulary it is asked for (a size beyond memory aborted the
    process) and counts pairs in 64 bits (a larger --min-frequency was an OverflowError):
    each is a usage error at its flag."""
    argv = ["tokenizer", "train", str(corpus), "--vocab", "100000000000", "-o", str(tmp_path / "t.json")]
    assert "--vocab: error: needs a whole number of tokens, from 1 to 1048576" in usage_error(argv, capsys)
    assert not (tmp_path / "t.json").exists()
    argv = ["tokenizer", "train", str(corpus), "--min-frequency", "1" + "0" * 23, "-o", str(tmp_path / "t.json")]
    assert "--min-frequency: error: needs a whole number of times, from 1 to 4294967295" in usage_error(argv, capsys)
    assert not (tmp_path / "t.json").exists()


def test_dlc_tokenizer_train_refuses_a_missing_or_binary_corpus(tmp_path, capsys):
    assert "no such corpus file" in failure(["tokenizer", "train", str(tmp_path / "no.txt"), "-o", "t.json"], capsys)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00 not text")
    assert "the corpus is not UTF-8 text" in failure(
        ["tokenizer", "train", str(tmp_path / "bin.txt"), "-o", str(tmp_path / "t.json")], capsys
    )


def test_a_bert_folder_saved_by_transformers_encodes_as_transformers_does(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = "the a film was wonderful dull plot , ! i loved it".split()
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s"]) + "\n")
    theirs = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    theirs.save_pretrained(tmp_path / "bert")  # tokenizer.json, tokenizer_config.json, special_tokens_map.json
    tok = T.load(tmp_path / "bert")
    assert (tok.pad, tok.pad_rule) == (theirs.pad_token_id, "the folder's pad_token")
    assert (tok.bos, tok.eos) == (theirs.cls_token_id, theirs.sep_token_id)
    texts = ["the film was wonderful", "i loved it ! the plot was dull , the film was dull", "films"]
    want = theirs(texts, padding="max_length", truncation=True, max_length=8)
    got = tok.encode(texts, length=8)
    assert got.ids.tolist() == want["input_ids"] and got.mask.tolist() == want["attention_mask"]


def test_a_gpt2_folder_pads_as_transformers_users_pad_it(tmp_path):
    """transformers' GPT-2 has no pad token: its users set pad_token = eos_token, which dlc does itself."""
    transformers = pytest.importorskip("transformers")
    theirs = transformers.PreTrainedTokenizerFast(
        tokenizer_object=gpt2_like(), bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    theirs.save_pretrained(tmp_path / "gpt2")
    tok = T.load(tmp_path / "gpt2")
    assert theirs.pad_token is None and tok.pad == tok.eos == tok.bos == theirs.eos_token_id
    theirs.pad_token = theirs.eos_token
    want = theirs(SENTENCES, padding="longest")
    got = tok.encode(SENTENCES)
    assert got.ids.tolist() == want["input_ids"] and got.mask.tolist() == want["attention_mask"]
