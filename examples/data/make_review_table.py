"""Writes reviews.csv, the labelled reviews of examples/text_classifier.dl: 400 one-line film
reviews in a text column and their opinion ("positive" or "negative") in a label column, drawn
from the templates and opinion words of make_reviews.py (all of them), with one seeded generator:
`python examples/data/make_review_table.py` rewrites the same file. Its tokenizer,
reviews_tokenizer.json, is trained on it by dlc:

    dlc tokenizer train examples/data/reviews.csv --kind wordpiece --vocab 400 -o examples/data/reviews_tokenizer.json
"""

import csv
from pathlib import Path

import numpy as np

from make_reviews import OPINION, TEMPLATES, sentence

HERE = Path(__file__).parent
SEED = 1
REVIEWS = 400


def main():
    rng = np.random.default_rng(SEED)
    with open(HERE / "reviews.csv", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["text", "label"])
        for i in range(REVIEWS):
            label = ("positive", "negative")[i % 2]
            words = OPINION["pos" if label == "positive" else "neg"]
            out.writerow([sentence(rng, TEMPLATES[rng.integers(len(TEMPLATES))], words), label])


if __name__ == "__main__":
    main()
