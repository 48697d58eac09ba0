"""Writes the word-level data sets of two examples from genesis.txt (the King James Genesis):

    tagging.npz   examples/bilstm_tagger.dl: verses of up to 48 tokens and a part-of-speech
                  tag of every token (words i32 [N, 48], tags i32 [N, 48] padded with -1,
                  lengths i32 [N])
    tokens.npz    examples/transformer_classifier.dl: verses that name exactly one of ten
                  people, and which one (tokens i32 [N, 64], label i32 [N])

The tags are not collected but derived by rule, so that a model can learn them: a small
hand-written lexicon of the closed word classes of Universal Dependencies (determiners,
pronouns, adpositions, ...), then spelling rules (a capitalized word the lexicon does not
know is a proper noun, "-eth" and "-ed" are verbs, ...), nouns otherwise. One rule needs
the next word: "to" before a verb of the lexicon is a particle ("to eat"), else an
adposition ("to the land"), which a bidirectional tagger can read and a word lookup cannot.

Nothing here is random: `python examples/data/make_genesis_tasks.py` rewrites the same files.
"""

import re
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
PIECE = 48  # tokens per tagging example at most: longer verses are cut into pieces
LENGTH = 64  # tokens per classified verse: the longest verse has 64 words
VOCAB = 1000  # classifier vocabulary: <pad>, <unk> and the 998 most frequent words

# The 17 tags of Universal Dependencies, in this order (SYM and X do not occur in Genesis).
TAGS = [
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
]
LEXICON = {
    "DET": "the a an this these those every each no any such",
    "ADP": "of in unto upon into from with by for before after over under among against through toward "
    "towards about above between without at on beside behind within across throughout beyond",
    "CCONJ": "and but or nor neither either",
    "SCONJ": "that because if when as lest though although until till whereas while whither whence where how",
    "PRON": "i me my mine myself thou thee thy thine thyself he him his himself she her herself it its itself "
    "we us our ourselves ye you your yourselves they them their themselves who whom whose which what "
    "whatsoever whosoever",
    "AUX": "was were be is are been being am art wast shall shalt will wilt may mayest might can canst could "
    "should would must hath hast had have having do did doth dost didst let",
    "PART": "not s",
    "ADV": "also now there then so very thus therefore yet again up down forth even here only away hence "
    "thither together never ever more less much far near",
    "NUM": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen twenty "
    "thirty forty fifty sixty seventy eighty ninety hundred thousand first second third fourth fifth "
    "sixth seventh",
    "INTJ": "behold lo o oh yea nay",
    "ADJ": "good evil great old young little many other all whole same own new fat lean rich poor strong "
    "wise holy fair dead alive living clean unclean high low long bitter sore",
    "VERB": "said saw went came took gave made called begat knew bare died lived sent told heard brought "
    "dwelt found spake rose set put lay left kept built blessed sware answered make take give go "
    "come see eat drink know bring dwell keep die live buy sell bury speak hear call send",
}
WORD_TAG = {w: tag for tag, words in LEXICON.items() for w in words.split()}
BASE_VERBS = set(
    "make take give go come see eat drink know bring dwell keep die live buy sell bury speak hear call send".split()
)

# Ten people of Genesis, by the names the text calls them.
PEOPLE = {
    "Jacob": "Jacob Israel",
    "Joseph": "Joseph",
    "Abraham": "Abraham Abram",
    "Isaac": "Isaac",
    "Pharaoh": "Pharaoh",
    "Esau": "Esau",
    "Laban": "Laban",
    "Rachel": "Rachel",
    "Noah": "Noah",
    "Sarah": "Sarah Sarai",
}
PERSON_OF = {name: i for i, names in enumerate(PEOPLE.values()) for name in names.split()}


def tokens(line: str) -> list:
    """Words and punctuation marks, in order ("Abraham's" is "Abraham", "'", "s")."""
    return re.findall(r"[A-Za-z]+|[^\sA-Za-z]", line)


def tag(word: str, following: str) -> str:
    """The tag of `word`, the token after it being `following`."""
    low = word.lower()
    if not word.isalpha():
        return "PUNCT"
    if low == "to":
        return "PART" if following.lower() in BASE_VERBS else "ADP"
    if low in WORD_TAG:
        return WORD_TAG[low]
    if word[0].isupper():
        return "PROPN"
    if low.endswith(("eth", "ed", "est")):
        return "VERB"
    if low.endswith(("ful", "ous", "less")):
        return "ADJ"
    return "NOUN"


def tagging(verses: list) -> dict:
    """Every verse as one example (a verse longer than PIECE tokens as several), with the id
    (by frequency, 0 is the most frequent) and the tag of every token; after the last token
    the words are 0 and the tags -1 (a loss ignores them), and `lengths` counts the tokens."""
    verse_tokens = [tokens(verse) for verse in verses]
    ids = {w: i for i, (w, _) in enumerate(Counter(t for ts in verse_tokens for t in ts).most_common())}
    words, tags, lengths = [], [], []
    for ts in verse_tokens:
        verse_tags = [TAGS.index(tag(w, nxt)) for w, nxt in zip(ts, ts[1:] + [""])]
        for at in range(0, len(ts), PIECE):
            piece = ts[at : at + PIECE]
            words.append([ids[w] for w in piece] + [0] * (PIECE - len(piece)))
            tags.append(verse_tags[at : at + PIECE] + [-1] * (PIECE - len(piece)))
            lengths.append(len(piece))
    return {
        "words": np.array(words, np.int32),
        "tags": np.array(tags, np.int32),
        "lengths": np.array(lengths, np.int32),
    }


def classification(verses: list) -> dict:
    """The verses that name exactly one of PEOPLE, as lowercase word ids padded with 0 to
    LENGTH (1 is a word outside the vocabulary), and the index of that person."""
    words = [[w for w in tokens(v) if w.isalpha()] for v in verses]
    common = [w for w, _ in Counter(w.lower() for ws in words for w in ws).most_common(VOCAB - 2)]
    ids = {w: i + 2 for i, w in enumerate(common)}
    rows, labels = [], []
    for ws in words:
        named = {PERSON_OF[w] for w in ws if w in PERSON_OF}
        if len(named) == 1:
            rows.append([ids.get(w.lower(), 1) for w in ws] + [0] * (LENGTH - len(ws)))
            labels.append(named.pop())
    return {"tokens": np.array(rows, np.int32), "label": np.array(labels, np.int32)}


def main():
    verses = (HERE / "genesis.txt").read_text(encoding="utf-8").splitlines()
    np.savez_compressed(HERE / "tagging.npz", **tagging(verses))
    np.savez_compressed(HERE / "tokens.npz", **classification(verses))


if __name__ == "__main__":
    main()
