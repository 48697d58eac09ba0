"""`dlc generate`: continue a text prompt with a trained character model or a token language model
(trained with a tokenizer, or an imported GPT-2 with its own), or decode an encoder-decoder's source."""

from __future__ import annotations

import sys
import json

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.api import _sequence_inputs
from dlc.runtime.decoding import OptionError
from dlc.runtime.kv_cache import step_model_name
from dlc.runtime.cli.arguments import model_arguments, whole, positive, real, seed_number, WEIGHTS_HELP
from dlc.runtime.cli.trained import weighted_model

HELP = 'continue a text prompt with a character or token language model'


def arguments(p):
    model_arguments(p, backend=True)
    p.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="the text to continue (an encoder-decoder's source: token ids, \"3 4 5\"); a token model's several "
        "prompts, of any lengths, are decoded together, each continuation printed as a quoted line",
    )
    p.add_argument(
        "--length",
        type=whole(0),
        default=200,
        metavar="N",
        help="characters to generate (a token model's tokens); an encoder-decoder's most tokens, EOS included "
        "(default 200)",
    )
    p.add_argument(
        "--temperature",
        type=real(0, strict=False),
        metavar="T",
        help="0 is greedy (the default); higher samples more freely (the default with --top-k or --top-p: 1)",
    )
    p.add_argument("--top-k", type=positive, metavar="K", help="sample among the K most likely tokens")
    p.add_argument(
        "--top-p",
        type=real(0, strict=True, most=1),
        metavar="P",
        help="sample among the fewest most likely tokens whose probabilities sum to at least P (nucleus sampling)",
    )
    p.add_argument(
        "--beam",
        type=positive,
        metavar="K",
        help="beam search: print the K best sequences found, with their log-probabilities",
    )
    p.add_argument(
        "--length-penalty",
        type=real(0, strict=False),
        metavar="ALPHA",
        help="with --beam, for an encoder-decoder: rank by log_prob / ((5 + length) / 6) ** ALPHA "
        "(GNMT's; default 0: by log_prob)",
    )
    p.add_argument("--seed", type=seed_number, default=0, metavar="S", help="seed of the sampling (default 0)")
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="a token model: run the whole model over the whole prefix for each token, not its step model over "
        "the cache of keys and values (slower; the same tokens)",
    )


def run(args):
    model = weighted_model(args)
    prompts = args.prompt or [""]
    if len(prompts) > 1:
        several(model, prompts, args)
        return
    if _sequence_inputs(model.eval_model) is None:
        prompt, show = prompts[0], lambda text: prompts[0] + text
        in_table = lambda text: json.dumps(show(text), ensure_ascii=False)  # quoted: text may span lines
    else:
        try:  # an encoder-decoder: the prompt is the source sequence, as token ids
            prompt = [int(t) for t in prompts[0].replace(",", " ").split()]
        except ValueError:
            raise DlcError(
                f"{model.name} is an encoder-decoder: give the source as token ids, as in --prompt \"3 4 5\""
            ) from None
        show = in_table = lambda ids: " ".join(str(t) for t in ids)
    found = generated(model, prompt, args)
    if args.beam is None:
        print(show(found))
        return
    penalized = args.length_penalty is not None
    print(f"{'log_prob':>10}  " + (f"{'score':>10}  " if penalized else "") + "sequence")
    for c in found:
        print(f"{c.log_prob:>10.4f}  " + (f"{c.score:>10.4f}  " if penalized else "") + in_table(c.sequence))
    if penalized:
        print(
            f"log_prob: the sum of the model's log-probabilities of the generated tokens; score: log_prob / "
            f"((5 + length) / 6) ** {args.length_penalty:g}, the length-penalized log-probability they are "
            "ranked by",
            file=sys.stderr,
        )


def several(model, prompts: list, args):
    """A token model's prompts decoded together: each prompt and its continuation, a quoted line each
    (a text may span lines)."""
    if step_model_name(model.program.models, model.name) is None:
        raise DlcError(
            f"{model.name} continues one prompt at a time: several decode together only for a token language "
            "model (one with a step model)",
            Span.whole("--prompt"),
        )
    if args.beam is not None:
        raise DlcError("beam search continues one prompt at a time: give one --prompt", Span.whole("--beam"))
    for prompt, text in zip(prompts, generated(model, prompts, args)):
        print(json.dumps(prompt + text, ensure_ascii=False))


def generated(model, prompt, args):
    """`model.generate` of `prompt` with the options of the command line; an option's error at its flag."""
    try:
        return model.generate(
            prompt,
            args.length,
            args.temperature,
            args.seed,
            beam=args.beam,
            top_k=args.top_k,
            top_p=args.top_p,
            length_penalty=args.length_penalty,
            cache=args.cache,
        )
    except OptionError as e:  # at its flag, as every flag's error
        raise DlcError(e.message, Span.whole("--" + e.option.replace("_", "-"))) from None
