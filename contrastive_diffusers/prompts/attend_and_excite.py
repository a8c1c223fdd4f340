"""The Attend-and-Excite benchmark (Chefer et al. 2023), generated from its word lists."""

from __future__ import annotations

from .items import PromptItem

__all__ = ["ANIMALS", "ATTEND_AND_EXCITE_SUBSETS", "COLORS", "OBJECTS", "SUBSET_ALIASES", "attend_and_excite_prompts"]

# Vocabulary and prompt templates of the Attend-and-Excite benchmark (Chefer et al. 2023,
# "Attend-and-Excite: Attention-Based Semantic Guidance for Text-to-Image Diffusion Models",
# SIGGRAPH), as in the published prompt list (YasminZhang/EBAMA data/ane_data.py). The list
# orders below are the ones that reproduce the published word order inside each pair
# ("a cat and a dog", never "a dog and a cat").
ANIMALS = (
    "cat", "dog", "bird", "bear", "lion", "horse",
    "elephant", "monkey", "frog", "turtle", "rabbit", "mouse",
)
OBJECTS = (
    "backpack", "glasses", "crown", "suitcase", "chair", "balloon",
    "bow", "car", "bowl", "bench", "clock", "apple",
)
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black", "white")
# Animal-object prompts use "a <animal> with a <object>" for these three and
# "a <animal> and a <colour> <object>" for the other nine.
_WORN = ("glasses", "crown", "bow")
_COLORED = tuple(o for o in OBJECTS if o not in _WORN)

# The published set drew each colour at random, so the colours are facts of the set, not
# derivable from the vocabulary: one colour per object of _COLORED, in that order.
_ANIMAL_OBJECT_COLORS = {
    "cat": "blue black black yellow yellow purple gray green red",
    "dog": "brown green orange blue purple gray pink gray black",
    "bird": "black black green brown yellow black purple white yellow",
    "bear": "orange red white red white purple gray blue pink",
    "lion": "black orange white brown red pink white yellow gray",
    "horse": "blue green pink pink white brown blue yellow green",
    "elephant": "pink green black green brown green green yellow orange",
    "monkey": "yellow orange blue green red green brown yellow orange",
    "frog": "yellow red black purple orange green pink green black",
    "turtle": "gray orange blue pink yellow yellow white blue pink",
    "rabbit": "orange yellow gray white yellow blue white gray orange",
    "mouse": "brown pink purple black red purple red blue pink",
}
# Object-object prompts: for OBJECTS[i], "colour_i/colour_j" for each later OBJECTS[j], in order.
_OBJECT_PAIR_COLORS = {
    "backpack": "gray/yellow green/yellow green/brown yellow/purple black/pink black/green orange/purple red/yellow green/purple gray/green yellow/gray",
    "glasses": "green/black red/red green/yellow white/orange yellow/brown yellow/black yellow/gray green/black orange/pink white/gray",
    "crown": "purple/blue pink/red blue/red pink/purple black/red red/black purple/blue gray/white gray/purple",
    "suitcase": "white/white blue/gray gray/brown yellow/yellow gray/black orange/brown brown/black red/blue",
    "chair": "white/gray purple/red green/purple purple/orange brown/white orange/blue pink/gray",
    "balloon": "blue/blue brown/pink green/pink blue/orange purple/white white/white",
    "bow": "white/white yellow/pink yellow/orange white/black pink/gray",
    "car": "white/black orange/red black/white purple/pink",
    "bowl": "purple/black brown/green orange/purple",
    "bench": "red/yellow green/red",
    "clock": "blue/blue",
    "apple": "",
}

ATTEND_AND_EXCITE_SUBSETS = ("animals", "animal_object", "object_object")
# The published prompts.json names the subsets differently; accept those names too.
SUBSET_ALIASES = {"animals_objects": "animal_object", "objects": "object_object"}
_AE_META = {"benchmark": "attend_and_excite"}


def _ae_subset(subset: str) -> list[tuple[str, list[list[str]]]]:
    if subset == "animals":
        return [
            (f"a {a} and a {b}", [[a], [b]])
            for i, a in enumerate(ANIMALS)
            for b in ANIMALS[i + 1 :]
        ]
    if subset == "animal_object":
        out = []
        for animal in ANIMALS:
            out += [(f"a {animal} with a {obj}", [[animal], [obj]]) for obj in _WORN]
            colors = _ANIMAL_OBJECT_COLORS[animal].split()
            out += [
                (f"a {animal} and a {color} {obj}", [[animal], [color, obj]])
                for obj, color in zip(_COLORED, colors)
            ]
        return out
    out = []
    for i, a in enumerate(OBJECTS):
        pairs = [p.split("/") for p in _OBJECT_PAIR_COLORS[a].split()]
        for b, (ca, cb) in zip(OBJECTS[i + 1 :], pairs):
            out.append((f"a {ca} {a} and a {cb} {b}", [[ca, a], [cb, b]]))
    return out


def attend_and_excite_prompts(subset: str | None = None) -> list[PromptItem]:
    """The Attend-and-Excite benchmark prompts (Chefer et al. 2023) with their token groups.

    ``subset``: ``"animals"`` (66, every unordered pair of 12 animals), ``"animal_object"``
    (144: each animal "with a" glasses / crown / bow, and "and a <colour> <object>" for nine
    objects), ``"object_object"`` (66, every pair of 12 coloured objects), or ``None`` for all
    276. Ids are ``"<subset>-<NNNN>"`` (1-based, in this generator's fixed order).
    """
    if subset is None:
        names = ATTEND_AND_EXCITE_SUBSETS
    else:
        name = SUBSET_ALIASES.get(subset, subset)
        if name not in ATTEND_AND_EXCITE_SUBSETS:
            raise ValueError(
                f"Unknown Attend-and-Excite subset {subset!r}; valid subsets: "
                f"{', '.join(ATTEND_AND_EXCITE_SUBSETS)} (or None for all)."
            )
        names = (name,)
    items = []
    for name in names:
        for n, (prompt, groups) in enumerate(_ae_subset(name), start=1):
            items.append(
                PromptItem(f"{name}-{n:04d}", prompt, name, groups, dict(_AE_META))
            )
    return items
