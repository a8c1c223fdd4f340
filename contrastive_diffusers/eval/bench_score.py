"""Stage 2 of a benchmark run: CLIP metrics (and the ShapesWorld oracle's verdict) for the
records that need them, in batches; an image that cannot be read becomes a failed record."""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic_io import write_json_atomic
from ..shapes.oracle import check
from .metrics import image_metrics
from .run_folder import judge_metrics, read_record


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise OSError(f"cannot read image {path}: {err}") from None


def _oracle_metrics(image, spec: dict) -> tuple[dict, dict]:
    """ShapesWorld's exact check of one image: ``oracle_success`` and why it failed."""
    result = check(image, spec)
    return {"oracle_success": float(result.success)}, {"success": result.success, "reasons": list(result.reasons)}


def _needs_clip(record: dict, scorer, key: dict, force: bool) -> bool:
    if scorer is None and not record.get("spec"):
        return False
    return force or record["metrics"] is None or record.get("scorer") != key


def _needs_judge(record: dict, judge, force: bool) -> bool:
    """Not judged yet, or judged with other settings (another model, splitter, ...)."""
    done = (record.get("judges") or {}).get(judge.name)
    return force or done is None or done.get("settings") != judge.settings()


def _with_judge_metrics(record: dict) -> dict | None:
    """The record's metrics with every judge's metrics merged in (a CLIP re-score replaces them)."""
    judged = judge_metrics(record)
    if record.get("metrics") is None and not judged:
        return None
    return {**(record.get("metrics") or {}), **judged}


def score_stage(run_dir: Path, paths: list[Path], scorer, captioner, key: dict, force: bool, progress,
                judges=()) -> int:
    """Score the records at ``paths`` that need it: CLIP metrics when there is a scorer, the
    oracle where a record has a spec, and each of ``judges`` (:mod:`.judges`) where it has not
    judged the image with its present settings; a judge's metrics join ``record["metrics"]``,
    its whole result is kept in ``record["judges"][name]``. An unreadable image becomes a
    failed record."""
    pending = []
    for path in paths:
        record = read_record(path)
        if not (record and record["status"] == "ok"):
            continue
        if _needs_clip(record, scorer, key, force) or any(_needs_judge(record, j, force) for j in judges):
            pending.append((path, record))
    batch_size = getattr(scorer, "batch_size", 16)
    bar = progress(total=len(pending), desc="score", unit="img")
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        readable = []
        for path, record in batch:
            try:
                readable.append((path, record, _open_image(run_dir / record["image"])))
            except OSError as err:
                record.update(status="failed", error=f"{err} (re-run the benchmark to regenerate it)", metrics=None)
                write_json_atomic(path, record)
                print(f"warning: {err}", file=sys.stderr)
        if readable:
            _score_clip([item for item in readable if _needs_clip(item[1], scorer, key, force)], scorer, captioner, key)
            for judge in judges:
                _judge([item for item in readable if _needs_judge(item[1], judge, force)], judge)
            for path, record, _ in readable:
                if record.get("scorer") is None and record.get("metrics") is None:
                    record["scorer"] = key  # judged only: the metrics belong with this run's key
                record["metrics"] = _with_judge_metrics(record)
                write_json_atomic(path, record)
        bar.update(len(batch))
    bar.close()
    return len(pending)


def _score_clip(items: list, scorer, captioner, key: dict) -> None:
    """CLIP metrics (and the oracle's verdict) of ``(path, record, image)`` items, in place."""
    if not items:
        return
    images = [image for _, _, image in items]
    records = [record for _, record, _ in items]
    captions = captioner.caption(images) if captioner is not None else None
    results = [{"metrics": {}} for _ in records]
    if scorer is not None:
        results = image_metrics(
            scorer,
            images,
            [r["prompt"] for r in records],
            token_groups=[r["token_groups"] for r in records],
            contrast_captions=[r["contrast_captions"] for r in records],
            captions=captions,
        )
    for i, ((_, record, image), result) in enumerate(zip(items, results)):
        if record.get("spec"):
            oracle_metrics, result["oracle"] = _oracle_metrics(image, record["spec"])
            result["metrics"] = {**oracle_metrics, **result["metrics"]}
        record.update(result, scorer=key, caption=captions[i] if captions else None)


def _judge(items: list, judge) -> None:
    """``judge``'s results for ``(path, record, image)`` items, into ``record["judges"]``."""
    if not items:
        return
    results = judge.score([image for _, _, image in items], [record for _, record, _ in items])
    settings = judge.settings()
    for (_, record, _), result in zip(items, results):
        record.setdefault("judges", {})
        record["judges"] = {**(record["judges"] or {}), judge.name: {"settings": settings, **result}}
