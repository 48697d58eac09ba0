"""Writes the word vectors and the labelled reviews of examples/sentiment_vectors.dl:

    vectors.txt         16-dimensional vectors of the words below, GloVe text format
    reviews_train.tsv   labelled sentences ("pos" or "neg", a tab, the sentence)
    reviews_test.tsv    labelled sentences whose opinion words reviews_train.tsv never uses

The vectors are learned without labels, as real ones are: from the co-occurrence counts of
a generated corpus of short film reviews (each review keeps one opinion throughout), as
the positive pointwise mutual information of every two words of a review, reduced to 16
dimensions by a truncated SVD (Levy, Goldberg and Dagan, "Improving Distributional
Similarity with Lessons Learned from Word Embeddings", 2015). Words of one opinion share
contexts, so their vectors share a direction; a classifier trained on some opinion words
can then read the others, which the labelled training sentences never show it.

Everything is drawn from one seeded generator: `python examples/data/make_reviews.py`
rewrites the same files.
"""

import re
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DIM = 16
SEED = 0

OPINION = {  # per opinion: adjectives, verbs ("i loved the film"), nouns ("this film is a gem")
    "pos": (
        [
            "good",
            "great",
            "wonderful",
            "superb",
            "brilliant",
            "excellent",
            "delightful",
            "charming",
            "moving",
            "beautiful",
            "fantastic",
            "enjoyable",
            "stunning",
            "clever",
            "funny",
            "gripping",
            "touching",
            "fresh",
            "lovely",
            "memorable",
            "powerful",
            "splendid",
            "terrific",
            "witty",
            "elegant",
            "heartfelt",
            "inventive",
            "thrilling",
            "marvelous",
            "engaging",
        ],
        ["loved", "enjoyed", "adored", "admired", "cherished", "savoured"],
        ["masterpiece", "gem", "triumph", "delight", "treat", "joy"],
    ),
    "neg": (
        [
            "bad",
            "awful",
            "terrible",
            "dull",
            "boring",
            "weak",
            "poor",
            "clumsy",
            "tedious",
            "bland",
            "messy",
            "silly",
            "lifeless",
            "forgettable",
            "painful",
            "dreadful",
            "lazy",
            "shallow",
            "annoying",
            "predictable",
            "stale",
            "flat",
            "horrible",
            "confusing",
            "pointless",
            "sloppy",
            "tiresome",
            "mediocre",
            "clunky",
            "disappointing",
        ],
        ["hated", "disliked", "loathed", "regretted", "endured", "resented"],
        ["disaster", "mess", "failure", "bore", "letdown", "chore"],
    ),
}
THINGS = [
    "movie",
    "film",
    "plot",
    "story",
    "acting",
    "cast",
    "script",
    "ending",
    "music",
    "score",
    "camera",
    "direction",
    "dialogue",
    "pacing",
    "characters",
    "hero",
    "villain",
    "soundtrack",
    "scenery",
    "effects",
    "editing",
    "performance",
    "screenplay",
    "finale",
    "opening",
    "sequel",
    "director",
    "lead",
    "romance",
    "humour",
]
DEGREE = [
    "very",
    "really",
    "quite",
    "truly",
    "so",
    "rather",
    "simply",
    "utterly",
    "genuinely",
    "fairly",
    "totally",
    "incredibly",
]
WHEN = [
    "last night",
    "yesterday",
    "on sunday",
    "this weekend",
    "with friends",
    "with my family",
    "at the cinema",
    "on a plane",
    "at home",
    "twice",
]
VERDICT = ["overall", "in the end", "honestly", "frankly", "all in all", "to be fair", "in short"]
TEMPLATES = [  # {a} an adjective, {v} a verb and {n} a noun of the review's opinion
    "the {thing} was {degree} {a}",
    "the {thing} was {a} and the {thing} was {a}",
    "i {v} the {thing}",
    "i {v} this {thing} , it is {a}",
    "what a {a} {thing}",
    "this {thing} is a {n}",
    "a {degree} {a} {thing} and a {a} {thing}",
    "we watched it {when} and it was {a}",
    "{verdict} , a {n}",
    "{verdict} the {thing} felt {degree} {a}",
    "the {thing} is {a} , the {thing} even more so",
    "it was a {a} {n}",
]
NEUTRAL = [  # sentences without an opinion, in the corpus for the vectors only
    "we watched the {thing} {when}",
    "the {thing} runs for two hours",
    "i saw it {when} with the whole family",
    "the {thing} of the sequel comes out next year",
]
SEEN = 0.5  # the share of each opinion's words that reviews_train.tsv uses; reviews_test.tsv uses the others


def sentence(rng, template: str, words: tuple) -> str:
    """The template with a random choice in each slot, the opinion's (adjectives, verbs, nouns) in {a}, {v}, {n}."""
    adjectives, verbs, nouns = words
    slots = {
        "a": adjectives,
        "v": verbs,
        "n": nouns,
        "thing": THINGS,
        "degree": DEGREE,
        "when": WHEN,
        "verdict": VERDICT,
    }
    return re.sub(r"\{(\w+)\}", lambda m: slots[m[1]][rng.integers(len(slots[m[1]]))], template)


def corpus(rng, reviews: int) -> list:
    """Reviews of 2 to 4 sentences, each of one opinion throughout, some sentences neutral."""
    docs = []
    for _ in range(reviews):
        words = OPINION["pos" if rng.random() < 0.5 else "neg"]
        templates = [NEUTRAL if rng.random() < 0.2 else TEMPLATES for _ in range(rng.integers(2, 5))]
        docs.append(" ".join(sentence(rng, t[rng.integers(len(t))], words) for t in templates).split())
    return docs


def vectors(docs: list) -> tuple:
    """The words, most frequent first (as in GloVe's files), and their vectors: the PPMI of
    two words in one review (context counts smoothed to the power 0.75), truncated by SVD."""
    frequency = Counter(w for d in docs for w in d)
    vocab = sorted(frequency, key=lambda w: (-frequency[w], w))
    index = {w: i for i, w in enumerate(vocab)}
    counts = np.zeros((len(vocab), len(vocab)))
    for d in docs:
        ids = np.array([index[w] for w in d])
        np.add.at(counts, (ids[:, None], ids[None, :]), 1.0)
    np.fill_diagonal(counts, 0.0)
    context = counts.sum(0) ** 0.75
    with np.errstate(divide="ignore"):
        pmi = np.log(counts * context.sum() / (counts.sum(1, keepdims=True) * context[None, :]))
    ppmi = np.maximum(pmi, 0.0)
    u, s, _ = np.linalg.svd(ppmi)
    u = u[:, :DIM] * np.sign(u[np.abs(u[:, :DIM]).argmax(0), np.arange(DIM)])  # a fixed sign per direction
    v = u * np.sqrt(s[:DIM])
    return vocab, v / np.linalg.norm(v, axis=1, keepdims=True)


def labelled(rng, n: int, seen: bool) -> list:
    """n lines "LABEL<TAB>SENTENCE", half pos and half neg, shuffled, with the opinion words of
    the SEEN share (or of the rest)."""
    lines = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        split = [(ws[: int(len(ws) * SEEN)] if seen else ws[int(len(ws) * SEEN) :]) for ws in OPINION[label]]
        lines.append(f"{label}\t{sentence(rng, TEMPLATES[rng.integers(len(TEMPLATES))], tuple(split))}")
    rng.shuffle(lines)
    return lines


def main():
    rng = np.random.default_rng(SEED)
    vocab, v = vectors(corpus(rng, 6000))
    with open(HERE / "vectors.txt", "w") as f:
        for w, row in zip(vocab, v):
            f.write(w + " " + " ".join(f"{x:.4f}" for x in row) + "\n")
    (HERE / "reviews_train.tsv").write_text("\n".join(labelled(rng, 200, seen=True)) + "\n")
    (HERE / "reviews_test.tsv").write_text("\n".join(labelled(rng, 100, seen=False)) + "\n")
    print(f"{len(vocab)} words of {DIM} values")


if __name__ == "__main__":
    main()
