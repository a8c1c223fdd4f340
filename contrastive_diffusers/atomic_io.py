"""Files that are never half-written: JSON, JSON Lines, text and images go to a temporary
file in the target folder and are renamed into place, so an interrupted process or a
concurrent reader sees either the old file or the new one."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from .records import jsonable


def folder_problem(path) -> str | None:
    """Why ``path`` cannot be (made) a folder, or ``None``: it, or a folder above it, is a file."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists():
            if place.is_dir():
                return None
            return f"{place} is a file" if place == path else f"{place}, above {path}, is a file"
    return None


def unwritable_folder_problem(path) -> str | None:
    """Why files cannot be written in the folder ``path`` (e.g. "Permission denied"), or ``None``. The folder (and any
    missing above it) is made to try, and removed again, so that a command checks its output
    folder before it loads a model, and a refused command leaves no empty folder behind."""
    path = Path(os.path.normpath(os.path.abspath(path)))  # "new/../out": the folders made are removed
    problem = folder_problem(path)
    if problem:
        return problem
    missing = [p for p in (path, *path.parents) if not p.exists()]  # the deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        for folder in missing:
            folder.rmdir()
    except OSError as err:
        return err.strerror or str(err)
    return None


def remove_empty_folders(path) -> None:
    """Remove ``path`` and the folders under it if none of them holds a file (a refused run's)."""
    path = Path(path)
    if not path.is_dir() or any(p.is_file() or p.is_symlink() for p in path.rglob("*")):
        return
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    path.rmdir()


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        _flush_to_disk(tmp)  # so that a power loss cannot leave an empty file under the final name
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes files
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _flush_to_disk(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader or an interruption never sees half a file."""
    write_text_atomic(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """One JSON object per line (JSON Lines)."""
    lines = [json.dumps(jsonable(row), allow_nan=False) + "\n" for row in rows]
    write_text_atomic(path, "".join(lines))


def save_image_atomic(image, path: Path, format: str = "PNG") -> None:
    """``image.save`` through a temporary file (the format is explicit: the temporary name has no image suffix)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=format)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
