"""The tokenizers of the tiny offline models, loaded from the package's assets (no network):
a small CLIP BPE vocabulary (``scripts/build_tiny_tokenizer.py``) and a small T5 Unigram
vocabulary (``scripts/build_tiny_t5_tokenizer.py``)."""

from __future__ import annotations

from pathlib import Path

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOKENIZER_DIR = _ASSETS / "tiny_clip_tokenizer"
T5_TOKENIZER_DIR = _ASSETS / "tiny_t5_tokenizer"
#: CLIP's context length.
CLIP_MAX_LENGTH = 77


def tiny_tokenizer(pad_token: str = "<|endoftext|>"):
    """The project's small CLIP-compatible BPE tokenizer.

    ``pad_token="!"`` gives the OpenCLIP-style tokenizer of SD 2.x / SDXL's and SD3's second encoder.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH)


def tiny_t5_tokenizer():
    """The project's small T5 tokenizer: sentencepiece-style Unigram pieces (``▁`` starts a
    word), ``<pad>`` = 0, ``</s>`` = 1 appended to every text, ``<unk>`` = 2, room for 512
    tokens as SD3's and Flux's, loaded as ``T5TokenizerFast``."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(T5_TOKENIZER_DIR)
