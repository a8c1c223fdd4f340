"""T2I-CompBench's judges (Huang et al., 2023; ``github.com/Karine-Huang/T2I-CompBench``), as
far as transformers can load their models.

- **B-VQA** (``bvqa``), the judge of the attribute-binding categories (color, shape, texture):
  the prompt's noun phrases (:mod:`.phrases`: spaCy noun chunks, at most 8), one question each
  (``"a red car?"``), P("yes") of each by BLIP VQA (:mod:`.blip_vqa`), each rounded to 4
  decimals as the official script writes them, multiplied; a prompt without a noun phrase
  scores 1, as there. The category's number is the mean over its images.
- **CLIP** (``t2i_clip``), the judge of the non-spatial category: the cosine similarity of the
  prompt and the image with OpenAI's CLIP ViT-B/32 (``openai/clip-vit-base-patch32``), no
  scaling, no clamping.
- Not covered: spatial, 3d_spatial and numeracy (UniDet, a detector transformers cannot load)
  and complex (the "3-in-1" mean of B-VQA, UniDet and CLIP): their images get ``None``.

Prompts of other sets (no T2I-CompBench category) are scored with B-VQA, which measures
attribute binding on any prompt of that form; the table names them by their own categories.

Differences from the official scripts, and why: the prompt is the bench record's, not the
image's file name cut at its first "_"; the phrase splitter falls back to rules when spaCy's
English model is not installed (see :mod:`.phrases`); the model is the HF conversion of
BLIP's ``model_base_vqa_capfilt_large.pth`` (``Salesforce/blip-vqa-capfilt-large``) with the
differences listed in :mod:`.blip_vqa`; the CLIP model is transformers' conversion of OpenAI's,
preprocessed by ``CLIPProcessor`` (the same resize, crop and normalisation as ``clip.load``).
"""

from __future__ import annotations

from collections import defaultdict

from .base import Judge, judge_table
from .phrases import PhraseSplitter

DEFAULT_VQA_MODEL = "Salesforce/blip-vqa-capfilt-large"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
MAX_PHRASES = 8  # the official --np_num
# BLIP_vqa.py drops these noun chunks (exact text) before it counts them: the places named by
# "on top of", "on the left of", ... are not objects to ask about.
SKIPPED_PHRASES = frozenset({"top", "the side", "the left", "the right"})

#: T2I-CompBench's category -> the metric its paper reports (None: its judge is not covered).
CATEGORY_METRIC = {
    "color": "bvqa",
    "shape": "bvqa",
    "texture": "bvqa",
    "non_spatial": "t2i_clip",
    "spatial": None,
    "3d_spatial": None,
    "numeracy": None,
    "complex": None,
}
_NOT_COVERED = {
    "spatial": "UniDet",
    "3d_spatial": "UniDet with depth",
    "numeracy": "UniDet",
    "complex": "the 3-in-1 mix of B-VQA, UniDet and CLIP",
}
_LABELS = {"bvqa": "B-VQA", "t2i_clip": "CLIP"}


def product_score(answers: list[float], decimals: int = 4) -> float:
    """B-VQA of one image: the phrases' P(yes), each rounded as the official script writes it
    (``'{:.4f}'``), multiplied (an empty list: 1), and the product rounded the same way."""
    score = 1.0
    for answer in answers:
        score *= float(f"{answer:.{decimals}f}")
    return float(f"{score:.{decimals}f}")


class T2ICompBenchJudge(Judge):
    name = "t2i-compbench"
    metric_names = ("bvqa", "t2i_clip")
    options = ("vqa_model", "clip_model")

    def __init__(self, vqa_model=DEFAULT_VQA_MODEL, clip_model=DEFAULT_CLIP_MODEL, device=None, dtype=None,
                 batch_size: int = 16, image_size: int | None = 480, phrase_splitter: str = "auto",
                 max_phrases: int = MAX_PHRASES):
        super().__init__(device, dtype, batch_size)
        import os

        from .blip_vqa import BlipYesNo

        if max_phrases < 1:
            raise ValueError(f"max_phrases must be at least 1 (the official script asks up to 8), got {max_phrases}.")
        self.max_phrases = max_phrases
        self.splitter = PhraseSplitter(phrase_splitter)
        # a hub id or folder; or a loaded model with yes_probability() and settings() (a BlipYesNo)
        self.vqa = BlipYesNo.from_pretrained(vqa_model, self.device, self.dtype, batch_size, image_size) if isinstance(
            vqa_model, (str, os.PathLike)) else vqa_model
        self.clip_model = clip_model
        self._clip = None  # loaded at the first non-spatial prompt: most runs never need it

    def settings(self) -> dict:
        clip = self.clip_model if isinstance(self.clip_model, str) or self.clip_model is None else (
            getattr(self.clip_model, "name", type(self.clip_model).__name__))
        return {**super().settings(), **self.vqa.settings(), "clip_model": str(clip) if clip else None,
                "phrase_splitter": self.splitter.name, "max_phrases": self.max_phrases,
                "skipped_phrases": sorted(SKIPPED_PHRASES)}

    def questions(self, prompt: str) -> list[str]:
        """The official questions of a prompt: its first ``max_phrases`` noun phrases plus "?",
        after dropping the phrases the official script drops (the places of a relation)."""
        phrases = [phrase for phrase in self.splitter(prompt) if phrase not in SKIPPED_PHRASES]
        return [f"{phrase}?" for phrase in phrases[: self.max_phrases]]

    def metric_for(self, category) -> str | None:
        return CATEGORY_METRIC.get(category, "bvqa")

    def score(self, images: list, records: list[dict]) -> list[dict]:
        results = [None] * len(records)
        vqa, clip = [], []
        for i, record in enumerate(records):
            metric = self.metric_for(record.get("category"))
            if metric == "bvqa":
                vqa.append(i)
            elif metric == "t2i_clip":
                clip.append(i)
            else:
                results[i] = self.empty_result(
                    f"T2I-CompBench judges {record.get('category')} with {_NOT_COVERED[record.get('category')]}, "
                    "which transformers cannot load: not covered")
        if vqa:
            questions = [self.questions(records[i]["prompt"]) for i in vqa]
            answers = self.vqa.yes_probability([images[i] for i in vqa], questions)
            for i, qs, ps in zip(vqa, questions, answers):
                results[i] = {"metrics": {"bvqa": product_score(ps), "t2i_clip": None},
                              "details": {"questions": qs, "p_yes": [round(p, 6) for p in ps]}}
        if clip:
            similarities = self._clip_scorer().clip_score([images[i] for i in clip],
                                                          [records[i]["prompt"] for i in clip], clamp=False) / 100
            for i, value in zip(clip, similarities.tolist()):
                results[i] = {"metrics": {"bvqa": None, "t2i_clip": value}, "details": {}}
        return results

    def _clip_scorer(self):
        if self._clip is None:
            from ..clip_score import ClipScorer

            if self.clip_model is None:
                raise ValueError("the non-spatial category needs a CLIP model; pass clip_model (T2I-CompBench "
                                 f"uses {DEFAULT_CLIP_MODEL}).")
            self._clip = self.clip_model if not isinstance(self.clip_model, str) else ClipScorer.from_pretrained(
                self.clip_model, device=self.device, dtype=self.dtype, batch_size=self.batch_size)
        return self._clip

    def summarize(self, records: list[dict]) -> dict:
        """Per method, each category's mean of the metric T2I-CompBench reports for it."""
        values = defaultdict(list)  # (method, category) -> values
        for record in records:
            metrics = record.get("metrics") or {}
            if not (record.get("judges") or {}).get(self.name):
                continue
            category = record.get("category")
            metric = self.metric_for(category)
            if metric and metrics.get(metric) is not None:
                values[(record["method"], category)].append(metrics[metric])
        methods = list(dict.fromkeys(r["method"] for r in records))
        categories = list(dict.fromkeys(r.get("category") for r in records))
        columns = ["method"] + [f"{c or 'all'} ({_LABELS.get(self.metric_for(c), 'not covered')})" for c in categories]
        rows = []
        for method in methods:
            row = [method]
            for category in categories:
                found = values.get((method, category))
                row.append(round(sum(found) / len(found), 4) if found else None)
            rows.append(row)
        notes = ["T2I-CompBench's numbers: per category, the mean over its images of B-VQA (color, shape, "
                 "texture) or CLIP ViT-B/32 cosine similarity (non-spatial)."]
        uncovered = [c for c in categories if c in _NOT_COVERED]
        if uncovered:
            notes.append("not covered (their judges are not loadable by transformers): "
                         + ", ".join(f"{c} ({_NOT_COVERED[c]})" for c in uncovered))
        return judge_table("T2I-CompBench", columns, rows, notes)
