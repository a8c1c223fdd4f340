"""Stage 2 of a benchmark run: CLIP metrics (and the ShapesWorld oracle's verdict) for the
records that need them, in batches; an image that cannot be read becomes a failed record."""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic_io import write_json_atomic
from ..shapes.oracle import check
from .metrics import image_metrics
from .run_folder import read_record


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


def score_stage(run_dir: Path, paths: list[Path], scorer, captioner, key: dict, force: bool, progress) -> int:
    """Score the records at ``paths`` that need it: CLIP metrics when there is a scorer, the
    oracle where a record has a spec. An unreadable image becomes a failed record."""
    pending = []
    for path in paths:
        record = read_record(path)
        if not (record and record["status"] == "ok") or (scorer is None and not record.get("spec")):
            continue
        if force or record["metrics"] is None or record.get("scorer") != key:
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
            images = [image for _, _, image in readable]
            records = [record for _, record, _ in readable]
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
            for i, ((path, record, image), result) in enumerate(zip(readable, results)):
                if record.get("spec"):
                    oracle_metrics, result["oracle"] = _oracle_metrics(image, record["spec"])
                    result["metrics"] = {**oracle_metrics, **result["metrics"]}
                record.update(result, scorer=key, caption=captions[i] if captions else None)
                write_json_atomic(path, record)
        bar.update(len(batch))
    bar.close()
    return len(pending)
