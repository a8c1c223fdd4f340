"""The same prompts and seeds across methods, as a picture: one row per (prompt, seed), one
column per method, each image framed green where the ShapesWorld oracle calls it correct and
red where wrong (grey: no verdict). The HTML report shows the same cells as a table
(:func:`.report_html.comparison_grid`); this PNG is for places without HTML, the README.

Drawn with PIL (already a dependency through diffusers), no plotting library.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .summary import unique

__all__ = ["comparison_cells", "comparison_png", "grid_sample", "verdict"]

_FRAME = {True: (0, 158, 115), False: (213, 94, 0), None: (170, 170, 170)}  # Okabe-Ito green / vermillion
_BORDER, _PAD = 3, 4
_MAX_TITLE = 360  # pixels of a row title: a long prompt is cut with "..." rather than widen the grid


def grid_sample(records, prompts: int = 8) -> list[tuple[str, int]]:
    """Up to ``prompts`` (prompt id, the prompt's first seed) pairs, taking prompts from each
    category in turn, so that a grid of a mixed run shows every category; the first seed of
    the run where the prompt has it (one seed across rows), else the prompt's own first."""
    by_category: dict = {}
    seeds_of: dict = {}
    for r in records:
        ids = by_category.setdefault(r.get("category"), [])
        if r.get("prompt_id") not in ids:
            ids.append(r.get("prompt_id"))
        seeds_of.setdefault(r.get("prompt_id"), []).append(r.get("seed"))
    run_seeds = unique(r.get("seed") for r in records)
    if not run_seeds:
        return []

    def seed_of(prompt_id):
        own = seeds_of[prompt_id]
        return run_seeds[0] if run_seeds[0] in own else own[0]

    chosen, queues = [], [list(ids) for ids in by_category.values()]
    while len(chosen) < prompts and any(queues):
        for queue in queues:
            if queue and len(chosen) < prompts:
                prompt_id = queue.pop(0)
                chosen.append((prompt_id, seed_of(prompt_id)))
    return chosen


def comparison_cells(records, methods: Sequence[str], pairs: Sequence[tuple[str, int]]) -> list[tuple[dict, list]]:
    """``[(first record of the prompt, [the record of each method at that seed, or None])]``
    for each (prompt id, seed) of ``pairs``; a re-run's later record wins."""
    by_key = {(r.get("method"), r.get("prompt_id"), r.get("seed")): r for r in records}
    rows = []
    for prompt_id, seed in pairs:
        first = next((r for r in records if r.get("prompt_id") == prompt_id), {"prompt_id": prompt_id})
        rows.append(({**first, "seed": seed}, [by_key.get((m, prompt_id, seed)) for m in methods]))
    return rows


def verdict(record: dict | None) -> bool | None:
    """The oracle's verdict on a finished image, None where there is none."""
    if record is None or record.get("status") != "ok" or record.get("oracle") is None:
        return None
    return bool(record["oracle"].get("success"))


def comparison_png(records, methods: Sequence[str], pairs: Sequence[tuple[str, int]], run_dir: str | os.PathLike,
                   path: str | os.PathLike, labels: dict | None = None, cell: int = 96) -> Path:
    """Write the grid to ``path`` (PNG). Image paths in ``records`` are relative to ``run_dir``;
    each image is scaled to fit ``cell`` pixels (aspect kept) with nearest-neighbour sampling (ShapesWorld images
    are 32 px: smoothing would blur the very edges the oracle judges). A cell without a
    finished image is left blank with its grey frame."""
    from PIL import Image, ImageDraw, ImageFont

    from ..atomic_io import save_image_atomic

    rows = comparison_cells(records, methods, pairs)
    if not rows or not methods:
        raise ValueError("comparison_png needs at least one (prompt, seed) pair and one method.")
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_width(text: str) -> int:
        return int(draw_probe.textlength(text, font=font))

    def row_title(first: dict) -> str:
        # one line, in the font's characters (a bitmap font has Latin-1 only), cut to fit
        prompt = _latin1(" ".join(str(first.get("prompt", first.get("prompt_id"))).split()))
        seed = f" (seed {first['seed']})"
        if text_width(prompt + seed) > _MAX_TITLE:
            while prompt and text_width(prompt + "..." + seed) > _MAX_TITLE:
                prompt = prompt[:-1]
            prompt = prompt.rstrip() + "..."
        return prompt + seed

    # Column titles wrap at spaces to fit their column ("CONFORM tuned" on two lines at 64 px).
    step = cell + 2 * _BORDER + _PAD
    titles = [_wrap(_latin1(str((labels or {}).get(m, m))), step - _PAD, text_width) for m in methods]
    left = max(text_width(row_title(first)) for first, _ in rows) + 2 * _PAD
    top = 6 + 14 * max(len(lines) for lines in titles)
    width = left + step * len(methods) + _PAD
    height = top + step * len(rows) + _PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for c, lines in enumerate(titles):
        centre = left + c * step + step // 2
        for k, line in enumerate(lines):
            draw.text((centre, top - 6 - 14 * (len(lines) - 1 - k)), line, fill="black", font=font, anchor="ms")
    for r, (first, cells) in enumerate(rows):
        y = top + r * step
        draw.text((_PAD, y + step // 2), row_title(first), fill="black", font=font, anchor="lm")
        for c, record in enumerate(cells):
            x = left + c * step
            frame = _FRAME[verdict(record)]
            draw.rectangle([x, y, x + cell + 2 * _BORDER - 1, y + cell + 2 * _BORDER - 1], fill=frame)
            picture = _open(record, Path(run_dir))
            draw.rectangle([x + _BORDER, y + _BORDER, x + _BORDER + cell - 1, y + _BORDER + cell - 1], fill="white")
            if picture is not None:  # fitted into the cell, not stretched: a wide image stays wide
                scale = cell / max(picture.size)
                fitted = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                        Image.NEAREST)
                image.paste(fitted, (x + _BORDER + (cell - fitted.width) // 2, y + _BORDER + (cell - fitted.height) // 2))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(image, path)
    return path


def _open(record: dict | None, run_dir: Path):
    from PIL import Image

    if record is None or record.get("status") != "ok" or not record.get("image"):
        return None
    file = run_dir / record["image"]
    try:
        with Image.open(file) as picture:
            return picture.convert("RGB")
    except OSError:  # missing or truncated: a blank cell, not a lost picture of everything else
        return None


def _wrap(text: str, width: int, measure) -> list[str]:
    """Words joined into lines no wider than ``width`` where they fit (a single long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and measure(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")
