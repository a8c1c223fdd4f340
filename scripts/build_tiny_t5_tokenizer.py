"""Build the small T5-compatible Unigram vocabulary shipped in
``contrastive_diffusers/assets/tiny_t5_tokenizer``.

The layout is T5's (sentencepiece Unigram): ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, then
the learned pieces, words beginning with the word-start piece ``▁``; the pre-tokenizer is
``Metaspace`` (a ``▁`` before every word) and the post-processor appends ``</s>``, as in
``t5-v1_1`` / the SD3 and Flux T5 tokenizers. ``T5TokenizerFast`` loads the folder without
network access.

The corpus: sentences made of the ShapesWorld vocabulary (every colour, shape, plural, size,
number and relation word), the Attend-and-Excite prompts and the words of the tiny CLIP
tokenizer's list. The ``tokenizers`` Unigram trainer learns sub-word pieces on it (on so small
a corpus it keeps only a few hundred short pieces); every corpus word is then added as one
``▁word`` piece scored by its log frequency, and the sub-word pieces are scored below any
whole word, so that every corpus word is a single piece and any other word (capitals and
digits included: they are in the alphabet) splits into several, as T5 splits uncommon words.

Run from the repository root: ``python scripts/build_tiny_t5_tokenizer.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import string
from collections import Counter
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_tiny_tokenizer import WORDS as CLIP_WORDS  # noqa: E402

from contrastive_diffusers.prompts.attend_and_excite import ANIMALS, OBJECTS  # noqa: E402
from contrastive_diffusers.prompts.attend_and_excite import COLORS as AE_COLORS  # noqa: E402
from contrastive_diffusers.shapes.captions import NUMBER_WORDS  # noqa: E402
from contrastive_diffusers.shapes.world import COLORS, PLURALS, RELATION_PHRASES, SHAPES, SIZES  # noqa: E402

SPECIALS = ["<pad>", "</s>", "<unk>"]
VOCAB_SIZE = 600
#: Sub-word pieces score this much below their learned log-probability: below any whole word.
SUBWORD_PENALTY = 12.0
MAX_LENGTH = 512  # the SD3 / Flux T5 tokenizers' model_max_length


def corpus(seed: int = 0) -> list[str]:
    """Sentences in the prompts' style: ShapesWorld captions (many, so its words are frequent),
    Attend-and-Excite prompts, and the general word list in random short sentences."""
    rng = random.Random(seed)
    numbers = [w for n, w in NUMBER_WORDS.items() if n > 1]
    sentences = []
    for _ in range(3000):
        c1, c2 = rng.sample(COLORS, 2)
        s1, s2 = rng.sample(SHAPES, 2)
        size = rng.choice(list(SIZES))
        sentences += [
            f"a {c1} {s1} {rng.choice(list(RELATION_PHRASES.values()))} a {c2} {s2}",
            f"a {size} {c1} {s1} and a {c2} {s2}",
            f"{rng.choice(numbers)} {c2} {PLURALS[s2]}",
        ]
    for a, b in itertools.combinations(ANIMALS, 2):
        sentences += [f"a {a} and a {b}"] * 5
    for animal, obj in itertools.product(ANIMALS, OBJECTS):
        sentences += [f"a {animal} with a {obj}", f"a {animal} and a {rng.choice(AE_COLORS)} {obj}"]
    words = sorted(set(w.lower() for w in CLIP_WORDS))
    for _ in range(2000):
        sentences.append("a " + " ".join(rng.sample(words, 4)))
    return sentences


def _pre_tokenizer():
    return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def main() -> None:
    out = ROOT / "contrastive_diffusers" / "assets" / "tiny_t5_tokenizer"
    out.mkdir(parents=True, exist_ok=True)

    sentences = corpus()
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    learner = Tokenizer(models.Unigram())
    learner.pre_tokenizer = _pre_tokenizer()
    learner.train_from_iterator(sentences, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]["vocab"]  # [[piece, log-prob], ...], specials first

    counts = Counter("▁" + word for sentence in sentences for word in sentence.split())
    total = sum(counts.values())
    scores = {piece: math.log(n / total) for piece, n in counts.items()}
    for piece, score in learned[len(SPECIALS):]:
        scores.setdefault(piece, score - SUBWORD_PENALTY)
    pieces = [(s, 0.0) for s in SPECIALS] + sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=SPECIALS.index("<unk>")))
    # sentencepiece's nmt_nfkc normalisation, without its binary charsmap: NFKC, then runs of
    # spaces collapsed (T5's tokenizer.json does the latter with the same Replace).
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.add_special_tokens(SPECIALS)
    vocab = tokenizer.get_vocab()
    assert [vocab[s] for s in SPECIALS] == [0, 1, 2], "T5 layout: <pad>=0, </s>=1, <unk>=2"
    split_words = [w for w in counts if len(tokenizer.encode(w[1:]).tokens) != 1]
    assert not split_words, f"corpus words that are not one piece: {split_words}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": MAX_LENGTH,
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "extra_ids": 0,
        "additional_special_tokens": [],
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    print(f"{tokenizer.get_vocab_size()} pieces -> {out}")


if __name__ == "__main__":
    main()
