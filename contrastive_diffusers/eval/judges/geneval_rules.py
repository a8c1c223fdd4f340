"""GenEval's decisions on detections given as data (no models here).

Follows djghosh13/geneval ``evaluation/evaluate_images.py`` (commit af4902f) and
``summary_scores.py``:

- :func:`keep_objects`: per class, detections scoring strictly above the threshold (0.3; 0.9
  for the ``counting`` task), best first, at most 16, then greedy non-maximum suppression at
  IoU ``max_overlap`` (1.0 by default: off, as GenEval runs it).
- :func:`evaluate`: each ``include`` row needs ``count`` kept objects of its class; its
  ``color`` must be the colour classifier's answer for each of the ``count`` best; its
  ``position`` ``[relation, target]`` must hold between every one of them and every object
  matched to the target row (a row whose colour failed matches nothing). ``exclude`` rows fail
  when ``count`` or more objects of the class were kept.
- :func:`relative_position`: box centres compared after shrinking the offset by
  ``position_threshold`` (0.1) times the two boxes' summed width / height; a relation holds
  when the shrunk offset's component along its axis is more than half the raw offset's length
  (its Euclidean norm).
- :func:`summary_scores` / :func:`format_summary`: images and prompts correct, per-task means
  in order of first appearance, and the overall score (mean over tasks).

Where this differs from the script: equal scores keep their input order (GenEval's
``argsort`` leaves ties unordered), and a failed position lists its relations in a fixed
order (GenEval prints a Python ``set``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...prompts.geneval import GENEVAL_COLORS, GENEVAL_POSITIONS

__all__ = [
    "Detection",
    "GenEvalSettings",
    "Verdict",
    "box_iou",
    "evaluate",
    "format_summary",
    "keep_objects",
    "relative_position",
    "summary_scores",
    "validate_metadata",
]


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected object: ``label`` a GenEval class name, ``score`` the detector's confidence,
    ``box`` ``(x0, y0, x1, y1)`` in pixels (as mmdet's ``mask2bbox``: end-exclusive),
    ``mask`` an optional boolean ``(H, W)`` array of the image's size."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GenEvalSettings:
    """GenEval's ``--options``: ``threshold``, ``counting_threshold``, ``max_objects``,
    ``max_overlap``, ``position_threshold``, with its defaults."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1

    def __post_init__(self):
        for name in ("threshold", "counting_threshold", "max_overlap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GenEvalSettings.{name} must lie in [0, 1], got {value!r}.")
        if not isinstance(self.max_objects, int) or self.max_objects < 1:
            raise ValueError(f"GenEvalSettings.max_objects must be a positive integer, got {self.max_objects!r}.")
        if self.position_threshold < 0:
            raise ValueError(f"GenEvalSettings.position_threshold must be >= 0, got {self.position_threshold!r}.")

    def threshold_for(self, tag: str) -> float:
        return self.counting_threshold if tag == "counting" else self.threshold


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reasons: list[str]

    @property
    def reason(self) -> str:
        """The reasons joined by newlines, as GenEval's ``reason`` column."""
        return "\n".join(self.reasons)


#: ``classify(objects, classname) -> one colour name per object``.
ColorClassifier = Callable[[Sequence[Detection], str], list[str]]


def box_iou(box_a, box_b) -> float:
    """IoU with GenEval's pixel convention (a box covers ``x1 - x0 + 1`` columns)."""

    def area(box):
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def keep_objects(detections: Sequence[Detection], tag: str,
                 settings: GenEvalSettings = GenEvalSettings()) -> dict[str, list[Detection]]:
    """The objects GenEval counts, by class, best first (classes with none left out)."""
    threshold = settings.threshold_for(tag)
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    kept = {}
    for label, dets in by_class.items():
        ordered = sorted((d for d in dets if d.score > threshold), key=lambda d: -d.score)[: settings.max_objects]
        chosen = []
        while ordered:
            best = ordered.pop(0)
            chosen.append(best)
            if settings.max_overlap < 1:
                ordered = [d for d in ordered if box_iou(best.box, d.box) < settings.max_overlap]
        if chosen:
            kept[label] = chosen
    return kept


def relative_position(box_a, box_b, position_threshold: float = 0.1) -> list[str]:
    """Where box ``a`` is relative to box ``b`` ("left of", "right of", "above", "below"; image
    y grows downwards); none when the boxes' centres are closer than the margin on both axes."""
    boxes = np.asarray([box_a[:4], box_b[:4]], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return []
    dx, dy = revised / np.linalg.norm(offset)
    holds = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return [name for name in GENEVAL_POSITIONS if holds[name]]


def validate_metadata(metadata) -> None:
    """Raise a ValueError naming the problem when ``metadata`` is not a GenEval evaluation row."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("tag"), str):
        raise ValueError(f"a GenEval row needs a string 'tag' (one of the tasks); got {metadata!r}.")
    for key in ("include", "exclude"):
        rows = metadata.get(key, [])
        if not isinstance(rows, list):
            raise ValueError(f"GenEval row {key!r} must be a list of {{'class', 'count'}} objects; got {rows!r}.")
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("class"), str) or not isinstance(row.get("count"), int):
                raise ValueError(f"GenEval {key} row {row!r} needs a string 'class' and an integer 'count'.")
    for index, row in enumerate(metadata.get("include", [])):
        position = row.get("position")
        if position is None:
            continue
        if (not isinstance(position, (list, tuple)) or len(position) != 2 or position[0] not in GENEVAL_POSITIONS
                or not isinstance(position[1], int) or not 0 <= position[1] < index):
            raise ValueError(
                f"GenEval include row {index} has position {position!r}; it must be [relation, target] with a "
                f"relation of {', '.join(GENEVAL_POSITIONS)} and the index of an earlier include row."
            )


def evaluate(objects: dict[str, list[Detection]], metadata: dict, classify_colors: ColorClassifier,
             settings: GenEvalSettings = GenEvalSettings(), colors: Sequence[str] = GENEVAL_COLORS) -> Verdict:
    """GenEval's verdict on the kept ``objects`` (:func:`keep_objects`) for one evaluation row;
    ``classify_colors`` is called only for rows that name a colour, on their ``count`` best
    objects. ``colors`` orders the colour tally in the reasons."""
    validate_metadata(metadata)
    correct, reasons, matched_groups = True, [], []
    for req in metadata.get("include", []):
        classname, count = req["class"], req["count"]
        found = objects.get(classname, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                answers = classify_colors(found, classname)
                if answers.count(req["color"]) < count:
                    matched = False
                    tally = ", ".join(f"{answers.count(c)} {c}" for c in colors if c in answers)
                    reasons.append(f"expected {req['color']} {classname}>={count}, found "
                                   f"{answers.count(req['color'])} {req['color']}; and {tally}")
            if "position" in req and matched:
                relation, target = req["position"]
                if matched_groups[target] is None:
                    matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    matched = _position_holds(found, matched_groups[target], relation, classname, reasons,
                                              settings.position_threshold)
        correct = correct and matched
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        n = len(objects.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return Verdict(correct, reasons)


def _position_holds(found, targets, relation, classname, reasons, position_threshold) -> bool:
    # Every object of the row against every target; the first failing pair is reported.
    for obj in found:
        for target in targets:
            true_relations = relative_position(obj.box, target.box, position_threshold)
            if relation not in true_relations:
                reasons.append(f"expected {classname} {relation} target, found {' and '.join(true_relations)} target")
                return False
    return True


def summary_scores(results: Sequence[dict]) -> dict:
    """``summary_scores.py``'s numbers from per-image results (``tag``, ``correct`` and
    ``prompt_key``, which identifies the prompt: GenEval groups by the row's JSON). Fractions in
    [0, 1]; tasks in order of first appearance; ``overall`` the mean of the task scores."""
    if not results:
        raise ValueError("summary_scores needs at least one scored image.")
    tasks: dict[str, list[bool]] = {}
    prompts: dict[str, bool] = {}
    for result in results:
        correct = bool(result["correct"])
        tasks.setdefault(result["tag"], []).append(correct)
        prompts[result["prompt_key"]] = prompts.get(result["prompt_key"], False) or correct
    task_rows = {tag: {"score": sum(v) / len(v), "correct": sum(v), "total": len(v)} for tag, v in tasks.items()}
    return {
        "total_images": len(results),
        "total_prompts": len(prompts),
        "correct_images": sum(bool(r["correct"]) for r in results) / len(results),
        "correct_prompts": sum(prompts.values()) / len(prompts),
        "tasks": task_rows,
        "overall": float(np.mean([row["score"] for row in task_rows.values()])),
    }


def format_summary(summary: dict) -> str:
    """The text ``summary_scores.py`` prints for these numbers."""
    lines = ["Summary", "=======", f"Total images: {summary['total_images']}",
             f"Total prompts: {summary['total_prompts']}", f"% correct images: {summary['correct_images']:.2%}",
             f"% correct prompts: {summary['correct_prompts']:.2%}", "", "Task breakdown", "=============="]
    for tag, row in summary["tasks"].items():
        lines.append(f"{tag:<16} = {row['score']:.2%} ({row['correct']} / {row['total']})")
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    return "\n".join(lines)
