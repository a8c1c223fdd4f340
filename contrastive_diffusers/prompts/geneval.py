"""GenEval's prompt suite (Ghosh et al. 2023, djghosh13/geneval), regenerated from its word lists.

GenEval's 553 prompts come from ``prompts/create_prompts.py``: its 80 COCO object names, 10
colours and 4 relations, drawn with ``numpy.random.default_rng(43)`` in a fixed order of calls
(all objects once; then 100 two-object, counting, colour, position and colour-attribution
draws), duplicates dropped. :func:`geneval_metadata` repeats those draws, so the rows equal
``evaluation_metadata.jsonl`` line for line (a test compares them with the published file)
without shipping it. Each row is what GenEval's evaluator reads: ``tag`` (the task),
``include`` (objects that must be there: ``class``, ``count``, optional ``color`` and
``position`` ``[relation, index of the target row of include]``), ``exclude`` (counting: no
``count`` or more of the class) and ``prompt``.
"""

from __future__ import annotations

import numpy as np

from .files import _geneval_groups
from .items import PromptItem

__all__ = [
    "GENEVAL_COLORS",
    "GENEVAL_OBJECTS",
    "GENEVAL_POSITIONS",
    "GENEVAL_TAGS",
    "geneval_metadata",
    "geneval_prompts",
]

#: GenEval's object names (``object_names.txt``): COCO's 80 thing classes in COCO's order, with
#: "mouse", "remote" and "keyboard" spelled "computer mouse", "tv remote", "computer keyboard".
GENEVAL_OBJECTS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
#: The colours of GenEval's prompts and of its CLIP colour classifier, in its order.
GENEVAL_COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
GENEVAL_POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: The six tasks, in the order of GenEval's tables.
GENEVAL_TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _plural(name: str) -> str:
    return name + ("es" if name.endswith("s") else "s")


def _colourable(rng: np.random.Generator, size=None):
    # GenEval never colours a person: it draws among the 79 other classes, counted from "person".
    offset = GENEVAL_OBJECTS.index("person")
    drawn = rng.choice(len(GENEVAL_OBJECTS) - 1, size=size, replace=False) + 1
    return (drawn + offset) % len(GENEVAL_OBJECTS)


def _draw_suite(rng: np.random.Generator, per_task: int) -> list[dict]:
    names, n = GENEVAL_OBJECTS, len(GENEVAL_OBJECTS)
    rows = [
        {"tag": "single_object", "include": [{"class": names[i], "count": 1}],
         "prompt": f"a photo of {_article(names[i])}"}
        for i in rng.choice(n, size=n, replace=False)
    ]
    for _ in range(per_task):
        a, b = rng.choice(n, size=2, replace=False)
        rows.append({"tag": "two_object",
                     "include": [{"class": names[a], "count": 1}, {"class": names[b], "count": 1}],
                     "prompt": f"a photo of {_article(names[a])} and {_article(names[b])}"})
    for _ in range(per_task):
        i = rng.choice(n)
        count = int(rng.integers(2, 4, endpoint=True))
        rows.append({"tag": "counting", "include": [{"class": names[i], "count": count}],
                     "exclude": [{"class": names[i], "count": count + 1}],
                     "prompt": f"a photo of {_NUMBERS[count]} {_plural(names[i])}"})
    for _ in range(per_task):
        i = int(_colourable(rng))
        color = GENEVAL_COLORS[rng.choice(len(GENEVAL_COLORS))]
        rows.append({"tag": "colors", "include": [{"class": names[i], "count": 1, "color": color}],
                     "prompt": f"a photo of {_article(color)} {names[i]}"})
    for _ in range(per_task):
        a, b = rng.choice(n, size=2, replace=False)
        relation = GENEVAL_POSITIONS[rng.choice(len(GENEVAL_POSITIONS))]
        rows.append({"tag": "position",
                     "include": [{"class": names[b], "count": 1},
                                 {"class": names[a], "count": 1, "position": [relation, 0]}],
                     "prompt": f"a photo of {_article(names[a])} {relation} {_article(names[b])}"})
    for _ in range(per_task):
        a, b = _colourable(rng, size=2)
        ca, cb = rng.choice(len(GENEVAL_COLORS), size=2, replace=False)
        color_a, color_b = GENEVAL_COLORS[ca], GENEVAL_COLORS[cb]
        rows.append({"tag": "color_attr",
                     "include": [{"class": names[a], "count": 1, "color": color_a},
                                 {"class": names[b], "count": 1, "color": color_b}],
                     "prompt": f"a photo of {_article(color_a)} {names[a]} and {_article(color_b)} {names[b]}"})
    return rows


def geneval_metadata(seed: int = 43, per_task: int = 100) -> list[dict]:
    """GenEval's evaluation rows as ``create_prompts.py --seed SEED -n PER_TASK`` writes them
    (the defaults give the published ``evaluation_metadata.jsonl``): repeated rows dropped,
    first occurrence kept, in draw order."""
    if not isinstance(per_task, int) or per_task < 0:
        raise ValueError(f"per_task must be a non-negative integer, got {per_task!r}.")
    unique, seen = [], set()
    for row in _draw_suite(np.random.default_rng(seed), per_task):
        key = repr(row)  # rows are built in one key order, so equal rows print alike
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def geneval_prompts(tag: str | None = None, seed: int = 43, per_task: int = 100) -> list[PromptItem]:
    """GenEval's prompts as :class:`PromptItem` s: id ``geneval-NNNNN`` (the row's index, as
    GenEval numbers its image folders), category = ``tag``, metadata = the evaluation row (what
    :class:`~contrastive_diffusers.eval.judges.geneval.GenEvalJudge` checks), token groups as
    :func:`~contrastive_diffusers.prompts.load_prompt_file` reads them from the published file.
    ``tag`` keeps one task (one of :data:`GENEVAL_TAGS`)."""
    if tag is not None and tag not in GENEVAL_TAGS:
        raise ValueError(f"Unknown GenEval task {tag!r}; the tasks are: {', '.join(GENEVAL_TAGS)}.")
    items = [
        PromptItem(f"geneval-{index:05d}", row["prompt"], row["tag"], _geneval_groups(row), row)
        for index, row in enumerate(geneval_metadata(seed, per_task))
    ]
    return [item for item in items if tag is None or item.category == tag]
