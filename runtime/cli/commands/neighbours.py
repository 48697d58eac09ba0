"""`dlc neighbours`: the words nearest to some words, by the cosine similarity of a trained embedding."""

from __future__ import annotations

from dlc.runtime.cli.arguments import model_arguments, positive, WEIGHTS_HELP
from dlc.runtime.cli.trained import weighted_model

HELP = 'the words nearest to some words, by the cosine similarity of a trained embedding'
ALIASES = ('neighbors',)


def arguments(p):
    model_arguments(p, backend=True)
    p.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    p.add_argument("words", nargs="+", metavar="WORD", help="the words to look up")
    p.add_argument("-k", type=positive, default=5, metavar="K", help="how many neighbours of each (default 5)")
    p.add_argument(
        "--param",
        metavar="NAME",
        help="the embedding table (default: the first the model declares with a row per word of the vocabulary)",
    )


def run(args):
    model = weighted_model(args)
    for word in args.words:
        found = model.neighbours(word, args.k, args.param)
        print(f"{word}: " + ", ".join(f"{w} {sim:.2f}" for w, sim in found))
