"""GenEval's rules on ShapesWorld images, beside the world's exact oracle: a test of the rules.

No real detector or CLIP can run offline, so the ShapesWorld oracle's own object reader
(:func:`contrastive_diffusers.shapes.oracle.detect`) stands in for both: each object it reads
becomes a :class:`~.geneval_rules.Detection` (class = shape, score 1.0, box = its pixel box)
and its colour is the colour classifier's answer. A caption spec becomes a GenEval evaluation
row (:func:`spec_to_geneval`). What disagrees with the oracle then comes from the rules alone,
where GenEval decides differently from the oracle:

- colour is checked on the ``count`` best objects of the class, not on any object of the class
  (with equal scores the reader's order, largest first, decides);
- counting counts the class, whatever its colour, and forbids ``count + 1`` of them;
- position: the relation must be the main direction between the boxes (GenEval's margin, 0.1
  of the two boxes' sizes, then more than half the offset), between the best object of each
  class; the oracle needs a centre offset of 0.1 of the image side along the relation's axis,
  between any objects of the right shape and colour;
- sizes ("a small circle") have no GenEval row: such captions are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...shapes.oracle import detect
from ...shapes.spec import CaptionSpec
from ...shapes.world import COLORS
from .geneval import judge_detections
from .geneval_rules import Detection, GenEvalSettings

__all__ = ["oracle_agreement", "reader_detections", "shapes_geneval_verdicts", "spec_to_geneval"]


def spec_to_geneval(spec: CaptionSpec | dict) -> dict | None:
    """The GenEval row that asks what ``spec`` asks, or ``None`` when the spec names a size."""
    spec = CaptionSpec.from_dict(spec) if isinstance(spec, dict) else spec
    if any(obj.size is not None for obj in spec.objects):
        return None
    order = list(range(len(spec.objects)))
    if spec.relation is not None:
        subject = spec.relation[0]
        order = [k for k in order if k != subject] + [subject]  # GenEval's target row comes first
    include, exclude = [], []
    for k in order:
        obj = spec.objects[k]
        row = {"class": obj.shape, "count": obj.count}
        if obj.color is not None:
            row["color"] = obj.color
        if spec.relation is not None and k == spec.relation[0]:
            row["position"] = [spec.relation[1], order.index(spec.relation[2])]
        include.append(row)
        if obj.exact:
            exclude.append({"class": obj.shape, "count": obj.count + 1})
    if exclude:
        tag = "counting"
    elif spec.relation is not None:
        tag = "position"
    elif len(include) > 1:
        tag = "color_attr" if any("color" in r for r in include) else "two_object"
    else:
        tag = "colors" if "color" in include[0] else "single_object"
    row = {"tag": tag, "include": include}
    if exclude:
        row["exclude"] = exclude
    return row


def reader_detections(image) -> tuple[list[Detection], dict[int, str]]:
    """The oracle reader's objects of known shape as detections, and each one's colour (by
    ``id`` of the detection)."""
    detections, colours = [], {}
    for obj in detect(image):
        if obj.shape is None:
            continue
        det = Detection(obj.shape, 1.0, tuple(float(v) for v in obj.bbox))
        detections.append(det)
        colours[id(det)] = obj.color
    return detections, colours


def shapes_geneval_verdicts(images: Sequence, specs: Sequence, settings: GenEvalSettings = GenEvalSettings()) -> list[dict | None]:
    """GenEval's verdict (``judge_detections``'s dict) per image; ``None`` where the spec has no
    GenEval row."""
    rows = [spec_to_geneval(spec) for spec in specs]
    index = [k for k, row in enumerate(rows) if row is not None]
    read = [reader_detections(images[k]) for k in index]
    colours = {key: colour for _, c in read for key, colour in c.items()}

    def classify(requests):
        return [[colours[id(det)] for det in objs] for _, objs, _ in requests]

    verdicts = judge_detections([dets for dets, _ in read], [rows[k] for k in index], classify, settings,
                                colors=COLORS)
    out: list[dict | None] = [None] * len(rows)
    for k, verdict in zip(index, verdicts):
        out[k] = verdict
    return out


def oracle_agreement(geneval: Sequence[bool], oracle: Sequence[bool], categories: Sequence[str] | None = None) -> dict:
    """How GenEval's verdicts agree with the oracle's: accuracy (fraction of equal verdicts),
    Pearson r of the two 0/1 verdicts (``None`` when either is constant), the confusion counts
    and, with ``categories``, the accuracy per category."""
    if len(geneval) != len(oracle) or not geneval:
        raise ValueError(f"need as many GenEval as oracle verdicts, at least one; got {len(geneval)} and {len(oracle)}.")
    g, o = np.asarray(geneval, dtype=float), np.asarray(oracle, dtype=float)
    r = float(np.corrcoef(g, o)[0, 1]) if g.std() > 0 and o.std() > 0 else None
    out = {
        "n": len(g),
        "accuracy": float((g == o).mean()),
        "pearson_r": r,
        "both_correct": int(((g == 1) & (o == 1)).sum()),
        "both_wrong": int(((g == 0) & (o == 0)).sum()),
        "geneval_only": int(((g == 1) & (o == 0)).sum()),
        "oracle_only": int(((g == 0) & (o == 1)).sum()),
        "geneval_rate": float(g.mean()),
        "oracle_rate": float(o.mean()),
    }
    if categories is not None:
        per = {}
        for cat in dict.fromkeys(categories):
            mask = np.asarray([c == cat for c in categories])
            per[cat] = {"n": int(mask.sum()), "accuracy": float((g[mask] == o[mask]).mean())}
        out["per_category"] = per
    return out
