"""Build the small CLIP-compatible BPE vocabulary shipped in
``contrastive_diffusers/assets/tiny_clip_tokenizer``.

The vocabulary follows CLIP's layout (256 byte symbols, the same 256 with ``</w>``,
learned merges, then ``<|startoftext|>`` and ``<|endoftext|>``), so ``CLIPTokenizer``
loads it unchanged. Merges are learned with the ``tokenizers`` BPE trainer on a word
list of the words compositional prompts use; any other word still tokenizes, into
several byte-level pieces, which keeps multi-piece words exercised in tests.

Run from the repository root: ``python scripts/build_tiny_tokenizer.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers.convert_slow_tokenizer import bytes_to_unicode

WORDS = """
a an the and with of on in at to next by near beside behind under over above below left right front top
bottom side inside outside holding wearing sitting standing one two three four five six many some
is are its it this that there their his her photo picture image painting drawing render of style
red orange yellow green blue purple pink brown black white gray grey gold silver cyan magenta violet
small big large tiny huge tall short long round square striped dotted solid wooden metal plastic glass
circle square triangle star hexagon pentagon diamond heart cross ring rectangle oval cube sphere cone
cat dog bird bear lion horse elephant monkey frog turtle rabbit mouse duck fish sheep cow pig owl fox
car bench bowl clock chair crown balloon backpack suitcase camera umbrella guitar shoe hat glasses bow
apple banana cake pizza book bag box cup lamp table bed sofa house tree flower boat train bus bicycle
vase kite ball bottle phone computer window door wall floor sky grass water road mountain beach city
man woman person child boy girl people
""".split()


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "contrastive_diffusers" / "assets" / "tiny_clip_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    byte_symbols = list(bytes_to_unicode().values())

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # large: training stops once every word is a single token
        min_frequency=1,
        initial_alphabet=byte_symbols,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    words = sorted(set(w.lower() for w in WORDS))
    bpe.train_from_iterator(words, trainer=trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    vocab: dict[str, int] = {}
    for symbol in byte_symbols + [s + "</w>" for s in byte_symbols]:
        vocab.setdefault(symbol, len(vocab))
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)

    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")


if __name__ == "__main__":
    main()
