"""Small Hugging Face model folders with random weights, as `save_pretrained` writes them
(config.json and model.safetensors), for the import's tests; `python tests/helpers/hf_folders.py
OUT [ARCHITECTURE]` writes one (a tiny BERT sequence classifier by default) to try
`dlc import OUT -o model.dl` on."""

from __future__ import annotations

import sys
from pathlib import Path

# a tiny encoder: 2 layers of 32 features, 4 heads, 100 token ids, 64 positions
TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
TINY_DISTILBERT = dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
FAMILIES = {"Bert": "BertConfig", "Roberta": "RobertaConfig", "DistilBert": "DistilBertConfig"}


def config_of(architecture: str, **settings):
    """The transformers config of a tiny model of `architecture` (BertForSequenceClassification, ...),
    `settings` over the tiny ones."""
    import transformers

    family = next(f for f in sorted(FAMILIES, key=len, reverse=True) if architecture.startswith(f))
    tiny = TINY_DISTILBERT if family == "DistilBert" else TINY
    return getattr(transformers, FAMILIES[family])(**(tiny | settings))


def tiny_model(architecture: str, seed: int = 0, **settings):
    """A transformers model of `architecture` with random weights, in evaluation mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config_of(architecture, **settings))
    with torch.no_grad():  # biases and norms away from their initial zeros and ones, so that each one counts
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def tiny_folder(path, architecture: str = "BertForSequenceClassification", seed: int = 0, **settings):
    """The folder of a tiny model (config.json, model.safetensors) at `path`; the model."""
    model = tiny_model(architecture, seed, **settings)
    model.save_pretrained(str(path), safe_serialization=True)
    return model


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2].parent))
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()
    out = sys.argv[1]
    tiny_folder(out, *sys.argv[2:3])
    print(f"wrote {out}")
