"""Prompt files in the layouts of public benchmarks (T2I-CompBench, GenEval, PartiPrompts,
Attend-and-Excite) and plain text / JSON Lines, read into :class:`~.items.PromptItem` s."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .attend_and_excite import SUBSET_ALIASES
from .items import SAFE_ID, PromptItem, prompt_words, token_groups_problem

__all__ = ["PROMPT_FILE_FORMATS", "load_prompt_file"]

PROMPT_FILE_FORMATS = ("auto", "text", "t2i_compbench", "geneval", "parti", "attend_and_excite", "jsonl")
# "a <animal> and a <colour> <object>" and the like; one or two words per object.
_AE_PATTERN = re.compile(r"an? (\w+(?: \w+)?) (?:and|with) an? (\w+(?: \w+)?)")


#: Byte-order marks (inside concatenated files) and zero-width characters, stripped from line ends.
_INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"
_LINE_ENDS = re.compile(r"^[\s" + _INVISIBLE + r"]+|[\s" + _INVISIBLE + r"]+$")
#: T2I-CompBench's file names (examples/dataset): "<category>[_train|_val][_seen|_unseen]" and the
#: complex category's parts ("complex_val_spatial"); the category decides the judge's metric.
_T2I_COMPBENCH_NAME = re.compile(
    r"(?P<category>3d_spatial|non_spatial|color|shape|texture|spatial|numeracy|complex)"
    r"(?:_(?:train|val))?(?:_(?:seen|unseen|action|spatial|spatialaction))?",
    re.IGNORECASE,
)


def _stem_id(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip(".-") or "prompts"
    return stem[:150]  # leaves room for "-<line number>" within the 200-character id limit


def _read_lines(path: Path) -> list[str]:
    if path.is_dir():
        raise IsADirectoryError(f"Prompt file {path} is a directory; pass the prompt file inside it.")
    if not path.exists():
        raise FileNotFoundError(
            f"Prompt file not found: {path} (absolute: {path.resolve()}). Check the path."
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text ({err.reason}); re-save the file as UTF-8."
        ) from None
    # Not splitlines(): line numbers must match what an editor shows, which breaks lines at
    # "\r\n", "\n" and a lone "\r" (old Mac files) but not at form feeds or U+2028.
    return re.split(r"\r\n|\r|\n", text)


def _no_prompts(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: no prompts found ({what}); add at least one prompt.")


def _looks_like_rows(path: Path, number: int, prompt: str) -> ValueError | None:
    """A plain-text line that is a row of another format (a JSON object, tab-separated fields),
    which would be drawn verbatim as a prompt."""
    if prompt.startswith("{") and prompt.endswith("}"):
        try:
            row = json.loads(prompt)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            return ValueError(f"{path}, line {number}: a JSON object, read as one prompt since the file is plain text; "
                              "name a JSON Lines file .jsonl (GenEval's evaluation_metadata.jsonl too).")
    if "\t" in prompt:
        return ValueError(f"{path}, line {number}: tab-separated fields, read as one prompt since the file is plain text; "
                          "name a PartiPrompts file .tsv, or keep one prompt per line without tabs.")
    return None


def _load_text(path: Path, category_from_stem: bool) -> list[PromptItem]:
    stem = _stem_id(path)
    category = _t2i_compbench_category(path) if category_from_stem else None
    items = []
    for number, line in enumerate(_read_lines(path), start=1):
        prompt = _LINE_ENDS.sub("", line)  # any Unicode space (a no-break space too) and invisibles
        if not prompt or prompt.startswith("#"):
            continue
        problem = _looks_like_rows(path, number, prompt)
        if problem:
            raise problem
        items.append(PromptItem(f"{stem}-{number}", prompt, category))
    if not items:
        raise _no_prompts(path, "every line is blank or a '#' comment; the format is one prompt per line")
    return items


def _t2i_compbench_category(path: Path) -> str:
    match = _T2I_COMPBENCH_NAME.fullmatch(path.stem)
    if match:
        return match.group("category").lower()
    return path.stem[: -len("_val")] if path.stem.endswith("_val") else path.stem


def _json_rows(path: Path):
    """``(line number, row dict)`` for each non-blank line of a JSON Lines file."""
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {number}: malformed JSON ({err.msg} at column {err.colno}); each line "
                'must be one JSON object such as {"prompt": "a red car and a blue bench"}.'
            ) from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}, line {number}: expected a JSON object, got {type(row).__name__}; each line "
                'must be one JSON object such as {"prompt": "a red car and a blue bench"}.'
            )
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not _LINE_ENDS.sub("", prompt):
            raise ValueError(
                f"{path}, line {number}: the row has no prompt (needs a non-empty string field "
                f'"prompt"; found keys: {", ".join(map(repr, row)) or "none"}).'
            )
        yield number, row


def _geneval_groups(row: dict) -> list[list[str]] | None:
    # GenEval lists the objects it checks for; they are the token groups when every word is
    # in the prompt as written (counting prompts use plurals such as "clocks": left unknown).
    include = row.get("include")
    if not isinstance(include, list) or not include:
        return None
    words = set(prompt_words(row["prompt"].lower()))
    groups = []
    for entry in include:
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            return None
        group = [entry["color"]] if isinstance(entry.get("color"), str) else []
        group.append(entry["class"])
        if not all(set(prompt_words(w.lower())) <= words for w in group):
            return None
        groups.append(group)
    return groups


def _load_geneval(path: Path) -> list[PromptItem]:
    stem = _stem_id(path)
    items = []
    for number, row in _json_rows(path):
        tag = row.get("tag")
        items.append(
            PromptItem(
                f"{stem}-{number}",
                _LINE_ENDS.sub("", row["prompt"]),
                tag if isinstance(tag, str) else None,
                _geneval_groups(row),
                row,
            )
        )
    if not items:
        raise _no_prompts(path, "every line is blank; the format is one JSON object per line")
    return items


def _load_jsonl(path: Path) -> list[PromptItem]:
    stem = _stem_id(path)
    items, seen = [], {}
    for number, row in _json_rows(path):
        item_id = row.get("id", f"{stem}-{number}")
        if not isinstance(item_id, str):
            raise ValueError(
                f"{path}, line {number}: id {item_id!r} is not a string; write it as one "
                f'("id": "{item_id}"), or drop the id to get \'<file stem>-<line number>\'.'
            )
        if not SAFE_ID.fullmatch(item_id):
            raise ValueError(
                f"{path}, line {number}: id {item_id!r} is not filesystem-safe; use letters, digits "
                "and . _ ~ + - (or drop the id to get '<file stem>-<line number>')."
            )
        if item_id.lower() in seen:  # case-insensitive: on macOS and Windows they would share a folder
            raise ValueError(
                f"{path}, line {number}: id {item_id!r} already used on line {seen[item_id.lower()]} (ids "
                "differing only in case count as one); ids must be unique."
            )
        seen[item_id.lower()] = number
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"{path}, line {number}: \"category\" must be a string or null.")
        groups = row.get("token_groups")
        # (a group word not in the prompt is no file error: bench records that image as failed, named)
        problem = None if groups is None else token_groups_problem(groups)
        if groups == []:
            problem = "token_groups is empty; list the prompt's objects, or leave the key out for automatic groups."
        if problem:
            raise ValueError(f"{path}, line {number}: {problem}")
        metadata = row.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}, line {number}: \"metadata\" must be a JSON object.")
        extra = {k: v for k, v in row.items() if k not in ("id", "prompt", "category", "token_groups", "metadata")}
        twice = sorted(set(metadata) & set(extra))
        if twice:
            raise ValueError(f"{path}, line {number}: {twice[0]!r} is both a field of the row and a key of its "
                             '"metadata"; keep one of them.')
        items.append(
            PromptItem(item_id, _LINE_ENDS.sub("", row["prompt"]), category, groups, {**metadata, **extra})
        )
    if not items:
        raise _no_prompts(path, "every line is blank; the format is one JSON object per line")
    return items


def _load_parti(path: Path) -> list[PromptItem]:
    # Plain split on tabs, no CSV quoting: PartiPrompts.tsv has literal '"' inside prompts.
    stem = _stem_id(path)
    lines = _read_lines(path)
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise _no_prompts(path, "the file is empty; expected a header line with a Prompt column")
    header = [h.strip() for h in lines[header_at].split("\t")]
    lowered = [h.lower() for h in header]
    if "prompt" not in lowered:
        raise ValueError(
            f"{path}, line {header_at + 1}: the TSV header has no 'Prompt' column (found: "
            f"{', '.join(map(repr, header))}); make the first line a tab-separated header such as "
            "'Prompt<TAB>Category<TAB>Challenge<TAB>Note', or load the file with format='text'."
        )
    p_col = lowered.index("prompt")
    c_col = lowered.index("category") if "category" in lowered else None
    items = []
    for number, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        cells += [""] * (len(header) - len(cells))
        prompt = _LINE_ENDS.sub("", cells[p_col])
        if not prompt:
            raise ValueError(
                f"{path}, line {number}: the row has an empty Prompt column ({p_col + 1}); fill it "
                "in or delete the row."
            )
        category = (cells[c_col].strip() or None) if c_col is not None else None
        metadata = {
            name: cells[i].strip()
            for i, name in enumerate(header)
            if i not in (p_col, c_col) and name
        }
        items.append(PromptItem(f"{stem}-{number}", prompt, category, None, metadata))
    if not items:
        raise _no_prompts(path, "the file has a header but no rows")
    return items


def _load_attend_and_excite(path: Path) -> list[PromptItem]:
    text = "\n".join(_read_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}, line {err.lineno}: malformed JSON ({err.msg} at column {err.colno}); the "
            'format is one JSON object mapping subset names to lists of prompts, e.g. {"animals": '
            '["a cat and a dog"]}.'
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(
            f"{path}: expected one JSON object mapping subset names to lists of prompts, e.g. "
            '{"animals": ["a cat and a dog"]}.'
        )
    stem = _stem_id(path)
    items, key_ids = [], {}
    for key, prompts in data.items():
        category = SUBSET_ALIASES.get(key, key)
        key_id = re.sub(r"[^A-Za-z0-9._-]+", "_", key)
        if key_id.lower() in key_ids:
            raise ValueError(
                f"{path}: subsets {key_ids[key_id.lower()]!r} and {key!r} give prompts the same ids "
                f"('{stem}-{key_id}-0001', ...); rename one of them."
            )
        key_ids[key_id.lower()] = key
        for n, prompt in enumerate(prompts, start=1):
            if not isinstance(prompt, str) or not _LINE_ENDS.sub("", prompt):
                raise ValueError(
                    f"{path}: entry {n} of {key!r} is not a non-empty prompt string ({prompt!r}); "
                    "every list entry must be a prompt."
                )
            prompt = _LINE_ENDS.sub("", prompt)
            match = _AE_PATTERN.fullmatch(prompt)
            groups = [match.group(1).split(), match.group(2).split()] if match else None
            items.append(
                PromptItem(f"{stem}-{key_id}-{n:04d}", prompt, category, groups, {"key": key})
            )
    if not items:
        raise _no_prompts(path, "the JSON object holds no prompts")
    return items


def _auto_format(path: Path) -> str:
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        # GenEval rows carry a "tag" and an "include" list (a user row may have a "tag" of its
        # own); peek at the first row (a broken one is reported by the loader).
        for line in _read_lines(path):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return "jsonl"
                geneval = isinstance(row, dict) and "tag" in row and isinstance(row.get("include"), list)
                return "geneval" if geneval else "jsonl"
        return "jsonl"
    if suffix == ".tsv":
        return "parti"
    if suffix == ".txt" and _T2I_COMPBENCH_NAME.fullmatch(path.stem):
        return "t2i_compbench"
    if suffix == ".txt":
        return "text"
    if suffix == ".json":
        return "attend_and_excite"
    hint = " (a gzip file: unpack it first)" if suffix == ".gz" else ""
    raise ValueError(
        f"{path}: cannot tell the format from the file name (extension {path.suffix!r}){hint}; name it "
        ".txt (one prompt per line), .jsonl (JSON rows with \"prompt\"), .tsv (PartiPrompts), .json "
        "(Attend-and-Excite's subsets) or T2I-CompBench's names (color_val.txt, ...), or in Python pass format= one of "
        f"{', '.join(PROMPT_FILE_FORMATS[1:])}."
    )


_LOADERS = {
    "text": lambda p: _load_text(p, category_from_stem=False),
    "t2i_compbench": lambda p: _load_text(p, category_from_stem=True),
    "geneval": _load_geneval,
    "parti": _load_parti,
    "attend_and_excite": _load_attend_and_excite,
    "jsonl": _load_jsonl,
}


def load_prompt_file(path, format: str = "auto") -> list[PromptItem]:
    """Read a prompt file into :class:`PromptItem` s.

    Formats: ``"text"`` (one prompt per line; blank and ``#`` lines skipped; ids
    ``"<stem>-<line>"``), ``"t2i_compbench"`` (as text; category = the category its
    published file name starts with: ``color_val_seen.txt`` -> ``"color"``,
    ``complex_val_spatial.txt`` -> ``"complex"``; another name: the stem without ``"_val"``), ``"geneval"`` (``evaluation_metadata.jsonl``: category = ``tag``, metadata =
    the row), ``"parti"`` (TSV with a ``Prompt`` header column; category = ``Category``, other
    columns in metadata), ``"attend_and_excite"`` (JSON object: subset name -> prompts),
    ``"jsonl"`` (rows with ``"prompt"`` and optional ``"id"``, ``"category"``,
    ``"token_groups"``, ``"metadata"``; other keys go to metadata). ``"auto"`` picks by name:
    ``.jsonl`` (GenEval when rows have ``"tag"``), ``.tsv``, T2I-CompBench's ``.txt`` names
    (``color_val.txt``, ``non_spatial.txt``, ...), ``.txt``, ``.json``.
    Problems raise ``ValueError`` naming the file and line.
    """
    if format not in PROMPT_FILE_FORMATS:
        raise ValueError(
            f"Unknown prompt file format {format!r}; valid formats: {', '.join(PROMPT_FILE_FORMATS)}."
        )
    path = Path(path)
    if format == "auto":
        if not path.is_file():
            _read_lines(path)  # raises the missing-file / directory error
        format = _auto_format(path)
    return _LOADERS[format](path)
