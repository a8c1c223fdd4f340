"""GenEval's judge (Ghosh et al. 2023): ``bench --judge geneval``.

Per image: Mask2Former detections (:mod:`.geneval_detector`), the objects GenEval keeps, CLIP
colours of the objects a colour row names (:mod:`.geneval_colors`), and GenEval's verdict
(:mod:`.geneval_rules`) for the prompt's evaluation row (``tag``, ``include``, ``exclude``:
the ``geneval`` prompt set and GenEval's ``evaluation_metadata.jsonl`` carry it). The metric
``geneval_correct`` is 1.0 or 0.0 (GenEval's ``correct``); the details keep the reasons and the
kept boxes as GenEval's results file does. :meth:`GenEvalJudge.summarize` prints GenEval's
table: per method the overall score (mean over tasks) and each task's fraction of correct
images, plus ``summary_scores.py``'s image and prompt totals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...prompts.geneval import GENEVAL_TAGS
from .base import Judge, judge_table
from .geneval_colors import DEFAULT_CLIP, ClipColorClassifier
from .geneval_detector import DEFAULT_DETECTOR, Mask2FormerDetector
from .geneval_rules import Detection, GenEvalSettings, evaluate, keep_objects, summary_scores, validate_metadata

__all__ = ["GenEvalJudge", "judge_detections"]

METRIC = "geneval_correct"


def judge_detections(detections: Sequence[Sequence[Detection]], metadatas: Sequence[dict], classify,
                     settings: GenEvalSettings = GenEvalSettings(), colors=None) -> list[dict]:
    """GenEval's verdicts for images given their detections: ``classify(requests)`` answers
    ``[(image_index, objects, classname), ...]`` with one colour list per request, all at once
    (so a model can batch them). Returns per image ``{"correct", "reasons", "objects"}``
    (``objects``: the kept boxes and scores by class)."""
    kept = [keep_objects(dets, meta["tag"], settings) for dets, meta in zip(detections, metadatas)]
    # A colour is asked for exactly when a colour row finds enough objects, whatever the other
    # rows decide, so every request is known before judging and goes to the model in one call.
    requests = [(index, objects[req["class"]][: req["count"]], req["class"])
                for index, (objects, meta) in enumerate(zip(kept, metadatas))
                for req in meta.get("include", [])
                if "color" in req and len(objects.get(req["class"], [])) >= req["count"]]
    answers = classify(requests) if requests else []
    by_key = {(index, classname, len(objs)): colours for (index, objs, classname), colours in zip(requests, answers)}
    results = []
    for index, (objects, meta) in enumerate(zip(kept, metadatas)):
        def lookup(objs, classname, index=index):
            return by_key[(index, classname, len(objs))]

        extra = {} if colors is None else {"colors": colors}
        verdict = evaluate(objects, meta, lookup, settings, **extra)
        asked = {f"{classname} x{len(objs)}": by_key[(index, classname, len(objs))]
                 for (i, objs, classname) in requests if i == index}
        results.append({
            "correct": verdict.correct,
            "reasons": verdict.reasons,
            "objects": {label: [[round(v, 2) for v in d.box] + [round(d.score, 4)] for d in dets]
                        for label, dets in objects.items()},
            "colors": asked,
        })
    return results


class GenEvalJudge(Judge):
    """GenEval's detector protocol. ``detector``: a COCO Mask2Former (hub id or folder);
    ``clip_model``: a CLIP (hub id or folder); ``settings``: GenEval's thresholds;
    ``test_size``: the detector's input size (short side, long side limit); ``background`` /
    ``crop``: GenEval's ``bgcolor`` / ``crop`` options for the colour crops."""

    name = "geneval"
    metric_names = (METRIC,)
    options = ("detector", "clip_model")

    def __init__(self, detector: str = DEFAULT_DETECTOR, clip_model: str = DEFAULT_CLIP, device: str | None = None,
                 dtype=None, batch_size: int = 16, settings: GenEvalSettings | None = None,
                 test_size=(800, 1333), background: str = "#999", crop: bool = True):
        super().__init__(device, dtype, batch_size)
        self.rules = settings or GenEvalSettings()
        self.detector_name, self.clip_name = str(detector), str(clip_model)
        self.detector = Mask2FormerDetector.from_pretrained(
            self.detector_name, self.device, self.dtype, batch_size=batch_size, test_size=test_size,
            min_score=min(self.rules.threshold, self.rules.counting_threshold))
        self.colors = ClipColorClassifier.from_pretrained(
            self.clip_name, self.device, self.dtype, batch_size=batch_size, background=background, crop=crop)

    def settings(self) -> dict:
        return {**super().settings(), "detector": self.detector_name, "clip_model": self.clip_name,
                "rules": vars(self.rules), "test_size": list(self.detector.test_size),
                "background": self.colors.background, "crop": self.colors.crop}

    def input_problem(self, metadata: dict | None) -> str | None:
        if not isinstance(metadata, dict) or "include" not in metadata:
            return None  # no GenEval row: such a prompt is skipped, not an error
        try:
            validate_metadata(metadata)
        except ValueError as err:
            return str(err)
        return None

    def score(self, images: list, records: list[dict]) -> list[dict]:
        if len(images) != len(records):
            raise ValueError(f"GenEvalJudge.score got {len(images)} images for {len(records)} records.")
        results: list[dict | None] = [None] * len(images)
        todo = []
        for k, record in enumerate(records):
            meta = record.get("judge_metadata")
            if not isinstance(meta, dict) or "include" not in meta:
                results[k] = self.empty_result("no GenEval evaluation row (tag / include) for this prompt")
                continue
            validate_metadata(meta)
            todo.append(k)
        if todo:
            chosen = [images[k] for k in todo]
            detections = self.detector(chosen)
            metadatas = [records[k]["judge_metadata"] for k in todo]

            def classify(requests):
                return self.colors.classify([(chosen[i], objs, name) for i, objs, name in requests])

            for k, verdict in zip(todo, judge_detections(detections, metadatas, classify, self.rules)):
                details = {"tag": records[k]["judge_metadata"]["tag"], **verdict}
                results[k] = {"metrics": {METRIC: float(verdict["correct"])}, "details": details}
        return results

    def summarize(self, records: list[dict]) -> dict:
        by_method: dict[str, list[dict]] = {}
        for record in records:
            value = (record.get("metrics") or {}).get(METRIC)
            meta = record.get("judge_metadata")
            if value is None or not isinstance(meta, dict) or "tag" not in meta:
                continue
            by_method.setdefault(record["method"], []).append(
                {"tag": meta["tag"], "correct": bool(value), "prompt_key": record["prompt_id"]})
        tags = [t for t in GENEVAL_TAGS if any(r["tag"] == t for rs in by_method.values() for r in rs)]
        tags += sorted({r["tag"] for rs in by_method.values() for r in rs} - set(tags))
        summaries = {method: summary_scores(results) for method, results in by_method.items()}
        # GenEval's overall averages the same tasks for every model. A method with no judged
        # image in a task (CONFORM is not applicable to single objects) would average fewer
        # tasks and look better or worse for it: it gets no overall, and every method gets the
        # mean over the tasks all of them have.
        missing = {m: [t for t in tags if t not in s["tasks"]] for m, s in summaries.items()}
        shared = [t for t in tags if all(t in s["tasks"] for s in summaries.values())]
        partial = any(missing.values())
        rows = []
        for method, summary in summaries.items():
            overall = None if missing[method] else summary["overall"]
            shared_cell = [float(np.mean([summary["tasks"][t]["score"] for t in shared])) if shared else None]
            rows.append([method, overall] + (shared_cell if partial else [])
                        + [summary["tasks"][t]["score"] if t in summary["tasks"] else None for t in tags]
                        + [summary["correct_images"], summary["correct_prompts"], summary["total_images"]])
        notes = [
            "GenEval's protocol (djghosh13/geneval evaluate_images.py, summary_scores.py): overall = mean over "
            "the tasks of the fraction of correct images; correct prompts = prompts with at least one correct image.",
            f"Detector {self.detector_name}, colours by CLIP {self.clip_name}; thresholds {self.rules.threshold} "
            f"({self.rules.counting_threshold} for counting), at most {self.rules.max_objects} objects per class, "
            f"position margin {self.rules.position_threshold}.",
        ]
        if partial:
            gaps = "; ".join(f"{m}: {', '.join(ts)}" for m, ts in missing.items() if ts)
            notes.append(
                f"No judged image (not applicable or failed) in some tasks ({gaps}): those methods get no overall, "
                "which would average fewer tasks than the others'; 'overall, shared tasks' averages "
                + (f"{', '.join(shared)} for every method" if shared else "nothing: no task has images of every method")
                + "; correct images and prompts count each method's own tasks.")
        absent = [m for m in dict.fromkeys(r.get("method") for r in records) if m not in summaries]
        if absent:
            notes.append(f"No judged GenEval image for {', '.join(map(str, absent))} (not applicable, failed, or no "
                         "GenEval row): not in the table.")
        columns = ["method", "overall", *(["overall, shared tasks"] if partial else []), *tags,
                   "correct images", "correct prompts", "images"]
        return judge_table("GenEval", columns, rows, notes)
