"""Prompt sets for compositional text-to-image evaluation.

:func:`attend_and_excite_prompts` builds the Attend-and-Excite benchmark (276 prompts) from its
word lists; :func:`load_prompt_file` reads prompt files in the layouts of public benchmarks
(T2I-CompBench, GenEval, PartiPrompts, Attend-and-Excite) and plain text / JSON Lines;
:func:`contrast_set` makes minimal perturbations of a two-object prompt. Pure Python: no
benchmark file is needed at run time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PromptItem",
    "ANIMALS",
    "OBJECTS",
    "COLORS",
    "ATTEND_AND_EXCITE_SUBSETS",
    "PROMPT_FILE_FORMATS",
    "BUILTIN_PROMPT_SETS",
    "attend_and_excite_prompts",
    "load_prompt_file",
    "load_prompt_set",
    "contrast_set",
]

_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~+-]{0,199}")


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a set.

    ``token_groups``: one group per object, its attribute words then its noun (noun last), as
    the guided pipelines take them; ``None`` when unknown. ``metadata`` holds the rest of the
    source row and must stay JSON-serialisable.
    """

    id: str
    prompt: str
    category: str | None = None
    token_groups: list[list[str]] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.id, str) or not _SAFE_ID.fullmatch(self.id):
            raise ValueError(
                f"PromptItem id {self.id!r} is not filesystem-safe: use 1-200 characters from "
                "letters, digits and . _ ~ + - (not starting with . ~ + -)."
            )
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"PromptItem {self.id!r}: the prompt must be a non-empty string.")
        if self.category is not None and not isinstance(self.category, str):
            raise ValueError(f"PromptItem {self.id!r}: category must be a string or None.")
        if self.token_groups is not None:
            problem = _token_groups_problem(self.token_groups)
            if problem:
                raise ValueError(f"PromptItem {self.id!r}: {problem}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"PromptItem {self.id!r}: metadata must be a dict.")


def _token_groups_problem(groups) -> str | None:
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        return 'token_groups must be a list of lists of words, e.g. [["red", "car"], ["blue", "bench"]].'
    for i, group in enumerate(groups):
        if not group or not all(isinstance(w, str) and w.strip() for w in group):
            return f"token group {i} must be a non-empty list of non-empty words (got {group!r})."
    return None


# --- Attend-and-Excite -------------------------------------------------------------------------
# Vocabulary and prompt templates of the Attend-and-Excite benchmark (Chefer et al. 2023,
# "Attend-and-Excite: Attention-Based Semantic Guidance for Text-to-Image Diffusion Models",
# SIGGRAPH), as in the published prompt list (YasminZhang/EBAMA data/ane_data.py). The list
# orders below are the ones that reproduce the published word order inside each pair
# ("a cat and a dog", never "a dog and a cat").
ANIMALS = (
    "cat", "dog", "bird", "bear", "lion", "horse",
    "elephant", "monkey", "frog", "turtle", "rabbit", "mouse",
)
OBJECTS = (
    "backpack", "glasses", "crown", "suitcase", "chair", "balloon",
    "bow", "car", "bowl", "bench", "clock", "apple",
)
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black", "white")
# Animal-object prompts use "a <animal> with a <object>" for these three and
# "a <animal> and a <colour> <object>" for the other nine.
_WORN = ("glasses", "crown", "bow")
_COLORED = tuple(o for o in OBJECTS if o not in _WORN)

# The published set drew each colour at random, so the colours are facts of the set, not
# derivable from the vocabulary: one colour per object of _COLORED, in that order.
_ANIMAL_OBJECT_COLORS = {
    "cat": "blue black black yellow yellow purple gray green red",
    "dog": "brown green orange blue purple gray pink gray black",
    "bird": "black black green brown yellow black purple white yellow",
    "bear": "orange red white red white purple gray blue pink",
    "lion": "black orange white brown red pink white yellow gray",
    "horse": "blue green pink pink white brown blue yellow green",
    "elephant": "pink green black green brown green green yellow orange",
    "monkey": "yellow orange blue green red green brown yellow orange",
    "frog": "yellow red black purple orange green pink green black",
    "turtle": "gray orange blue pink yellow yellow white blue pink",
    "rabbit": "orange yellow gray white yellow blue white gray orange",
    "mouse": "brown pink purple black red purple red blue pink",
}
# Object-object prompts: for OBJECTS[i], "colour_i/colour_j" for each later OBJECTS[j], in order.
_OBJECT_PAIR_COLORS = {
    "backpack": "gray/yellow green/yellow green/brown yellow/purple black/pink black/green orange/purple red/yellow green/purple gray/green yellow/gray",
    "glasses": "green/black red/red green/yellow white/orange yellow/brown yellow/black yellow/gray green/black orange/pink white/gray",
    "crown": "purple/blue pink/red blue/red pink/purple black/red red/black purple/blue gray/white gray/purple",
    "suitcase": "white/white blue/gray gray/brown yellow/yellow gray/black orange/brown brown/black red/blue",
    "chair": "white/gray purple/red green/purple purple/orange brown/white orange/blue pink/gray",
    "balloon": "blue/blue brown/pink green/pink blue/orange purple/white white/white",
    "bow": "white/white yellow/pink yellow/orange white/black pink/gray",
    "car": "white/black orange/red black/white purple/pink",
    "bowl": "purple/black brown/green orange/purple",
    "bench": "red/yellow green/red",
    "clock": "blue/blue",
    "apple": "",
}

ATTEND_AND_EXCITE_SUBSETS = ("animals", "animal_object", "object_object")
# The published prompts.json names the subsets differently; accept those names too.
_AE_ALIASES = {"animals_objects": "animal_object", "objects": "object_object"}
_AE_META = {"benchmark": "attend_and_excite"}


def _ae_subset(subset: str) -> list[tuple[str, list[list[str]]]]:
    if subset == "animals":
        return [
            (f"a {a} and a {b}", [[a], [b]])
            for i, a in enumerate(ANIMALS)
            for b in ANIMALS[i + 1 :]
        ]
    if subset == "animal_object":
        out = []
        for animal in ANIMALS:
            out += [(f"a {animal} with a {obj}", [[animal], [obj]]) for obj in _WORN]
            colors = _ANIMAL_OBJECT_COLORS[animal].split()
            out += [
                (f"a {animal} and a {color} {obj}", [[animal], [color, obj]])
                for obj, color in zip(_COLORED, colors)
            ]
        return out
    out = []
    for i, a in enumerate(OBJECTS):
        pairs = [p.split("/") for p in _OBJECT_PAIR_COLORS[a].split()]
        for b, (ca, cb) in zip(OBJECTS[i + 1 :], pairs):
            out.append((f"a {ca} {a} and a {cb} {b}", [[ca, a], [cb, b]]))
    return out


def attend_and_excite_prompts(subset: str | None = None) -> list[PromptItem]:
    """The Attend-and-Excite benchmark prompts (Chefer et al. 2023) with their token groups.

    ``subset``: ``"animals"`` (66, every unordered pair of 12 animals), ``"animal_object"``
    (144: each animal "with a" glasses / crown / bow, and "and a <colour> <object>" for nine
    objects), ``"object_object"`` (66, every pair of 12 coloured objects), or ``None`` for all
    276. Ids are ``"<subset>-<NNNN>"`` (1-based, in this generator's fixed order).
    """
    if subset is None:
        names = ATTEND_AND_EXCITE_SUBSETS
    else:
        name = _AE_ALIASES.get(subset, subset)
        if name not in ATTEND_AND_EXCITE_SUBSETS:
            raise ValueError(
                f"Unknown Attend-and-Excite subset {subset!r}; valid subsets: "
                f"{', '.join(ATTEND_AND_EXCITE_SUBSETS)} (or None for all)."
            )
        names = (name,)
    items = []
    for name in names:
        for n, (prompt, groups) in enumerate(_ae_subset(name), start=1):
            items.append(
                PromptItem(f"{name}-{n:04d}", prompt, name, groups, dict(_AE_META))
            )
    return items


# --- prompt files ------------------------------------------------------------------------------

PROMPT_FILE_FORMATS = ("auto", "text", "t2i_compbench", "geneval", "parti", "attend_and_excite", "jsonl")
# "a <animal> and a <colour> <object>" and the like; one or two words per object.
_AE_PATTERN = re.compile(r"an? (\w+(?: \w+)?) (?:and|with) an? (\w+(?: \w+)?)")


def _stem_id(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip(".-") or "prompts"
    return stem[:150]  # leaves room for "-<line number>" within the 200-character id limit


def _read_lines(path: Path) -> list[str]:
    if path.is_dir():
        raise IsADirectoryError(f"Prompt file {path} is a directory; pass the prompt file inside it.")
    if not path.exists():
        raise FileNotFoundError(
            f"Prompt file not found: {path} (absolute: {path.resolve()}). Check the path, or pass "
            f"a built-in set name: {', '.join(BUILTIN_PROMPT_SETS)}."
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text ({err.reason}); re-save the file as UTF-8."
        ) from None
    # split("\n"), not splitlines(): line numbers must match what an editor shows.
    return [line.rstrip("\r") for line in text.split("\n")]


def _no_prompts(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: no prompts found ({what}); add at least one prompt.")


def _load_text(path: Path, category_from_stem: bool) -> list[PromptItem]:
    stem = _stem_id(path)
    category = None
    if category_from_stem:
        category = path.stem[: -len("_val")] if path.stem.endswith("_val") else path.stem
    items = []
    for number, line in enumerate(_read_lines(path), start=1):
        prompt = line.strip()
        if not prompt or prompt.startswith("#"):
            continue
        items.append(PromptItem(f"{stem}-{number}", prompt, category))
    if not items:
        raise _no_prompts(path, "every line is blank or a '#' comment; the format is one prompt per line")
    return items


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
        if not isinstance(prompt, str) or not prompt.strip():
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
    words = set(_words(row["prompt"].lower()))
    groups = []
    for entry in include:
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            return None
        group = [entry["color"]] if isinstance(entry.get("color"), str) else []
        group.append(entry["class"])
        if not all(set(_words(w.lower())) <= words for w in group):
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
                row["prompt"].strip(),
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
        if not isinstance(item_id, str) or not _SAFE_ID.fullmatch(item_id):
            raise ValueError(
                f"{path}, line {number}: id {item_id!r} is not filesystem-safe; use letters, digits "
                "and . _ ~ + - (or drop the id to get '<file stem>-<line number>')."
            )
        if item_id in seen:
            raise ValueError(
                f"{path}, line {number}: id {item_id!r} already used on line {seen[item_id]}; ids "
                "must be unique."
            )
        seen[item_id] = number
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"{path}, line {number}: \"category\" must be a string or null.")
        groups = row.get("token_groups")
        if groups is not None and _token_groups_problem(groups):
            raise ValueError(f"{path}, line {number}: {_token_groups_problem(groups)}")
        metadata = row.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}, line {number}: \"metadata\" must be a JSON object.")
        extra = {k: v for k, v in row.items() if k not in ("id", "prompt", "category", "token_groups", "metadata")}
        items.append(
            PromptItem(item_id, row["prompt"].strip(), category, groups, {**metadata, **extra})
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
        prompt = cells[p_col].strip()
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
    items = []
    for key, prompts in data.items():
        category = _AE_ALIASES.get(key, key)
        key_id = re.sub(r"[^A-Za-z0-9._-]+", "_", key)
        for n, prompt in enumerate(prompts, start=1):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(
                    f"{path}: entry {n} of {key!r} is not a non-empty prompt string ({prompt!r}); "
                    "every list entry must be a prompt."
                )
            prompt = prompt.strip()
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
        # GenEval rows carry a "tag"; peek at the first row (a broken one is reported by the loader).
        for line in _read_lines(path):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return "jsonl"
                return "geneval" if isinstance(row, dict) and "tag" in row else "jsonl"
        return "jsonl"
    if suffix == ".tsv":
        return "parti"
    if name.endswith("_val.txt"):
        return "t2i_compbench"
    if suffix == ".txt":
        return "text"
    if suffix == ".json":
        return "attend_and_excite"
    raise ValueError(
        f"{path}: cannot tell the format from the file name (extension {path.suffix!r}); pass "
        f"format= one of {', '.join(PROMPT_FILE_FORMATS[1:])}."
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
    ``"<stem>-<line>"``), ``"t2i_compbench"`` (as text; category = file stem without
    ``"_val"``), ``"geneval"`` (``evaluation_metadata.jsonl``: category = ``tag``, metadata =
    the row), ``"parti"`` (TSV with a ``Prompt`` header column; category = ``Category``, other
    columns in metadata), ``"attend_and_excite"`` (JSON object: subset name -> prompts),
    ``"jsonl"`` (rows with ``"prompt"`` and optional ``"id"``, ``"category"``,
    ``"token_groups"``, ``"metadata"``; other keys go to metadata). ``"auto"`` picks by name:
    ``.jsonl`` (GenEval when rows have ``"tag"``), ``.tsv``, ``*_val.txt``, ``.txt``, ``.json``.
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


BUILTIN_PROMPT_SETS = (
    ("attend_and_excite",)
    + tuple(f"attend_and_excite:{s}" for s in ATTEND_AND_EXCITE_SUBSETS)
    + ("shapes", "shapes:test", "shapes:sample", "shapes:train")
)


def load_prompt_set(name_or_path: str) -> list[PromptItem]:
    """A built-in set (``"attend_and_excite"``, ``"attend_and_excite:<subset>"``, ``"shapes"`` =
    ``"shapes:test"``, ``"shapes:sample"`` (its first two prompts per category),
    ``"shapes:train"``: the ShapesWorld sets) or a prompt file path (read with :func:`load_prompt_file`, format picked from the name)."""
    name = str(name_or_path)
    if name in ("shapes", "shapes:test", "shapes:sample", "shapes:train"):
        # ShapesWorld: every item carries metadata["spec"], which the bench runner's oracle checks
        from ..shapes.prompts import shapes_prompts

        if name == "shapes:sample":
            return shapes_prompts("test", per_category=2)
        return shapes_prompts("train" if name == "shapes:train" else "test")
    if name == "attend_and_excite":
        return attend_and_excite_prompts()
    if name.startswith("attend_and_excite:"):
        return attend_and_excite_prompts(name.split(":", 1)[1])
    path = Path(name)
    # Something shaped like a path gets the missing-file error rather than the set-name one.
    if path.exists() or "/" in name or "\\" in name or path.suffix:
        return load_prompt_file(path)
    raise ValueError(
        f"Unknown prompt set {name!r}: not a built-in set ({', '.join(BUILTIN_PROMPT_SETS)}) and "
        "no such file. A path to a prompt file (.txt, .jsonl, .tsv, .json) is also accepted."
    )


# --- contrast sets -----------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:['\-]\w+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _locate(item: PromptItem) -> tuple[list[re.Match], list[list[tuple[int, int]]]]:
    """Prompt word matches, and per group per entry the ``(first, last + 1)`` word-index span.

    Each group's noun takes its first occurrence not taken by an earlier group; each attribute
    the nearest untaken occurrence before the group's next word, so "a red car and a red bench"
    gives each "red" to its own noun.
    """
    tokens = list(_WORD.finditer(item.prompt))
    lowered = [t.group().lower() for t in tokens]

    def starts(entry: str) -> list[int]:
        parts = [w.lower() for w in _words(entry)]
        if not parts:
            return []
        k = len(parts)
        return [i for i in range(len(lowered) - k + 1) if lowered[i : i + k] == parts]

    taken: set[int] = set()

    def free(start: int, k: int) -> bool:
        return not taken.intersection(range(start, start + k))

    spans = []
    for group in item.token_groups:
        k_of = [max(len(_words(w)), 1) for w in group]
        found = [starts(w) for w in group]
        for word, where in zip(group, found):
            if not where:
                raise ValueError(
                    f"Token group word {word!r} not found in prompt {item.prompt!r} (item "
                    f"{item.id!r}); fix the token groups or the prompt."
                )
        noun_k = k_of[-1]
        noun = next((s for s in found[-1] if free(s, noun_k)), found[-1][0])
        group_spans = [(noun, noun + noun_k)]
        anchor = noun
        for word_starts, k in zip(reversed(found[:-1]), reversed(k_of[:-1])):
            before = [s for s in word_starts if s + k <= anchor and free(s, k)]
            anywhere = [s for s in word_starts if free(s, k)]
            s = before[-1] if before else (anywhere[0] if anywhere else word_starts[0])
            group_spans.insert(0, (s, s + k))
            anchor = s
        for s, e in group_spans:
            taken.update(range(s, e))
        spans.append(group_spans)
    return tokens, spans


def _edit(prompt: str, tokens, edits: list[tuple[tuple[int, int], str]]) -> str | None:
    """Replace word-index spans with texts; ``None`` when spans overlap."""
    char_edits = sorted((tokens[s].start(), tokens[e - 1].end(), text) for (s, e), text in edits)
    for (_, end, _), (start, _, _) in zip(char_edits, char_edits[1:]):
        if start < end:
            return None
    out = prompt
    for start, end, text in reversed(char_edits):
        out = out[:start] + text + out[end:]
    return out


def _vocabulary_next(noun: str, avoid: set[str]) -> str | None:
    for vocab in (ANIMALS, OBJECTS):
        if noun in vocab:
            i = vocab.index(noun)
            for step in range(1, len(vocab)):
                candidate = vocab[(i + step) % len(vocab)]
                if candidate not in avoid:
                    return candidate
    return None


def _bindings(groups) -> frozenset:
    """What a caption says: which attributes go with which noun."""
    return frozenset((tuple(w.lower() for w in g[:-1]), g[-1].lower()) for g in groups)


def contrast_set(item: PromptItem) -> list[PromptItem]:
    """Minimal perturbations of a prompt with token groups (Winoground-style contrast captions).

    - ``swap_attributes`` (exactly two groups, both with attributes, each group's attributes
      consecutive words): "a red car and a blue bench" -> "a blue car and a red bench".
    - ``swap_objects`` (exactly two groups): nouns swap, attributes stay in place -> "a cat
      and a red bench" becomes "a bench and a red cat". Left out when it binds the same
      attributes to the same nouns as the prompt ("a dog and a cat" only paraphrases "a cat
      and a dog") or as ``swap_attributes`` ("a red bench and a blue car" says what "a blue
      car and a red bench" says): a contrast caption must mean something else.
    - ``replace_object``: the last group whose noun is in :data:`ANIMALS` or :data:`OBJECTS`
      gets the next noun of that list that is none of the prompt's nouns -> "a red car and a
      blue clock". Articles are left as they are ("a apple"), as in the published A&E set.

    A perturbation that does not apply, or would leave the prompt unchanged (equal attributes),
    is left out. Ids are ``"<source id>~<perturbation>"``; metadata is ``{"perturbation": ...,
    "source_id": ...}``. Raises ``ValueError`` when the item has no token groups or a group's
    word is not in the prompt.
    """
    if not item.token_groups:
        raise ValueError(
            f"contrast_set needs token groups; item {item.id!r} ({item.prompt!r}) has none. Set "
            'token_groups, e.g. [["red", "car"], ["blue", "bench"]].'
        )
    groups = item.token_groups
    tokens, spans = _locate(item)

    def text(span: tuple[int, int]) -> str:
        return item.prompt[tokens[span[0]].start() : tokens[span[1] - 1].end()]

    def consecutive(word_spans) -> bool:
        return all(x[1] == y[0] for x, y in zip(word_spans, word_spans[1:]))

    results: list[tuple[str, str, list[list[str]]]] = []

    if len(groups) == 2:
        a_spans, b_spans = spans
        a_attr, b_attr = a_spans[:-1], b_spans[:-1]
        if a_attr and b_attr and consecutive(a_attr) and consecutive(b_attr):
            a_region = (a_attr[0][0], a_attr[-1][1])
            b_region = (b_attr[0][0], b_attr[-1][1])
            prompt = _edit(item.prompt, tokens, [(a_region, text(b_region)), (b_region, text(a_region))])
            new_groups = [groups[1][:-1] + groups[0][-1:], groups[0][:-1] + groups[1][-1:]]
            results.append(("swap_attributes", prompt, new_groups))
        prompt = _edit(
            item.prompt, tokens, [(a_spans[-1], text(b_spans[-1])), (b_spans[-1], text(a_spans[-1]))]
        )
        new_groups = [groups[0][:-1] + groups[1][-1:], groups[1][:-1] + groups[0][-1:]]
        if _bindings(new_groups) not in [_bindings(groups)] + [_bindings(g) for _, _, g in results]:
            results.append(("swap_objects", prompt, new_groups))

    nouns = {g[-1].lower() for g in groups}
    for index in reversed(range(len(groups))):
        replacement = _vocabulary_next(groups[index][-1].lower(), nouns)
        if replacement is None:
            continue
        old = text(spans[index][-1])
        new = replacement.capitalize() if old[:1].isupper() else replacement
        prompt = _edit(item.prompt, tokens, [(spans[index][-1], new)])
        new_groups = [list(g) for g in groups]
        new_groups[index] = groups[index][:-1] + [replacement]
        results.append(("replace_object", prompt, new_groups))
        break

    return [
        PromptItem(
            f"{item.id}~{name}",
            prompt,
            item.category,
            new_groups,
            {"perturbation": name, "source_id": item.id},
        )
        for name, prompt, new_groups in results
        if prompt is not None and prompt != item.prompt
    ]
