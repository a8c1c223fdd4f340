"""The files of a benchmark folder and the rules that let several runs fill one folder.

- ``bench.json`` (:class:`Ledger`): what must stay the same between the runs that share the
  folder (model, pipeline, dtype, generation settings), and everything the folder holds so
  far: methods with their configurations, prompts with their texts, seeds. A run may add
  methods, prompts and seeds; it may not change a setting, a method's configuration or a
  prompt's text (that raises :class:`BenchInputError`).
- ``<method>/<prompt-id>/<seed>.json``: one record per image (see :func:`new_record`).

Everything is written atomically (:mod:`contrastive_diffusers.atomic_io`).
"""

from __future__ import annotations

from pathlib import Path

from ..atomic_io import jsonable, read_json, write_json_atomic

BENCH_FILE = "bench.json"


class BenchInputError(ValueError):
    """The user's benchmark input cannot be used; the message names the problem and the fix."""


def record_path(run_dir: Path, method: str, prompt_id: str, seed: int) -> Path:
    return Path(run_dir) / method / prompt_id / f"{seed}.json"


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when there is none (or it is not valid JSON, or not an
    object with a record's keys: a hand-edited file is redone rather than stopping the run)."""
    try:
        record = read_json(path)
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or not _RECORD_KEYS <= record.keys():
        return None
    return record


#: The keys every record has from :func:`new_record` on.
_RECORD_KEYS = frozenset(["method", "prompt_id", "prompt", "seed", "status"])


def judge_metrics(record: dict) -> dict:
    """The per-image metrics of every judge that scored the record (``record["judges"]``):
    they do not depend on the CLIP model that scored the rest of ``record["metrics"]``."""
    results = (record.get("judges") or {}).values()
    return {k: v for result in results if isinstance(result, dict) for k, v in (result.get("metrics") or {}).items()}


def drop_clip_metrics(record: dict) -> None:
    """Forget the CLIP metrics (their inputs changed), keeping the judges' verdicts; no scorer
    then claims the record, so the next run with any CLIP model scores it again."""
    record.update(metrics=judge_metrics(record) or None, scorer=None)


def drop_judge_results(record: dict) -> None:
    """Forget the judges' verdicts (what they read changed), keeping the CLIP metrics."""
    judged = judge_metrics(record)
    metrics = {k: v for k, v in (record.get("metrics") or {}).items() if k not in judged}
    record.update(metrics=metrics or None, judges=None)


def new_record(method: str, prompt_id: str, prompt: str, category, seed: int, token_groups=None,
               contrast_captions=None) -> dict:
    """A record before its image exists: status "failed" until generation succeeds."""
    return {
        "method": method,
        "prompt_id": prompt_id,
        "prompt": prompt,
        "category": category,
        "seed": seed,
        "image": None,
        "attention": None,
        "status": "failed",
        "error": None,
        "seconds": None,
        "token_groups": token_groups,
        "contrast_captions": contrast_captions,
        "guidance": None,
        "metrics": None,
        "scorer": None,
    }


#: The file each command keeps in its output folder, by which a folder is known as its.
RUN_FILES = {"bench": BENCH_FILE, "tune": "tune.json", "generate": "settings.json"}


def other_command_in(folder: Path, command: str) -> str | None:
    """A message when ``folder`` holds another command's run (``bench``, ``tune`` or
    ``generate``), whose report or settings ``command`` would overwrite; else ``None``. A
    generate run that ended before its first image holds nothing to overwrite."""
    for other, name in RUN_FILES.items():
        path = Path(folder) / name
        if other != command and path.exists() and not (other == "generate" and holds_no_images(path)):
            return (f"{folder} holds a {other} run ({name}), not a {command} run: {command} would overwrite its "
                    f"report or mix with its files; choose another folder.")
    return None


def _generate_settings(settings_path: Path) -> dict | None:
    try:
        settings = read_json(settings_path)
    except (OSError, ValueError):
        return None
    # "argv": a generate run's settings.json, not another tool's file of that name
    return settings if isinstance(settings, dict) and "argv" in settings else None


def is_generate_settings(settings_path: Path) -> bool:
    """Whether ``settings_path`` is the settings.json of a generate run."""
    return _generate_settings(settings_path) is not None


def holds_no_images(settings_path: Path) -> bool:
    """A generate run that ended before its first image (its input refused, or stopped while
    the first image was drawn): its folder holds nothing to keep."""
    settings = _generate_settings(settings_path)
    return settings is not None and settings.get("images") == []


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete the temporary files a killed run left behind (``.<name>.<random>.tmp``), only in
    a bench folder (one holding ``bench.json``): ``--output-dir`` may name any folder, whose
    other files are not ours to touch."""
    if not (Path(run_dir) / BENCH_FILE).exists():
        return 0
    removed = 0
    for path in Path(run_dir).rglob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


#: Fingerprint settings that folders made by earlier versions do not hold.
_RECORDED_LATER = ("contrast_captions",)


def _first_difference(old: dict, new: dict, prefix: str = "") -> tuple[str, object, object]:
    """The first setting whose value differs, by dotted name ("generation.num_inference_steps");
    a setting only one side has differs too ("(not set)" on the other, also against ``None``)."""
    missing = "(not set)"
    for key in dict.fromkeys([*new, *old]):
        there, now = old.get(key, missing), new.get(key, missing)
        if there != now:
            if isinstance(there, dict) and isinstance(now, dict):
                return _first_difference(there, now, f"{prefix}{key}.")
            return f"{prefix}{key}", there, now
    raise ValueError("the settings do not differ")


class Ledger:
    """``bench.json``: the folder's fixed settings and the union of what its runs asked for."""

    def __init__(self, run_dir: Path, data: dict | None = None):
        self.run_dir = Path(run_dir)
        self.data = data or {"fingerprint": None, "methods": {}, "prompts": {}, "categories": {}, "seeds": [], "runs": []}

    @classmethod
    def load(cls, run_dir: Path) -> "Ledger":
        path = Path(run_dir) / BENCH_FILE
        if not path.exists():
            problem = other_command_in(run_dir, "bench")
            if problem:
                raise BenchInputError(problem)
            return cls(run_dir)
        try:
            data = read_json(path)
        except ValueError as err:
            raise BenchInputError(f"{path} is not valid JSON ({err}); restore it or use another output folder.") from None
        if not isinstance(data, dict) or "fingerprint" not in data:
            raise BenchInputError(f"{path} is not a benchmark settings file; use another output folder.")
        return cls(run_dir, data)

    @property
    def exists(self) -> bool:
        return self.data["fingerprint"] is not None

    def merge(self, fingerprint: dict, methods: dict, prompts: dict, categories: dict, seeds: list) -> None:
        """Add this run's methods, prompts and seeds; refuse a change of what the folder fixed."""
        fingerprint, methods = jsonable(fingerprint), jsonable(methods)
        old = self.data["fingerprint"]
        if old is not None:  # a folder made before a setting was recorded takes this run's value
            old = {**{k: fingerprint[k] for k in _RECORDED_LATER if k in fingerprint}, **old}
        if old is not None and old != fingerprint:
            key, there, now = _first_difference(old, fingerprint)
            raise BenchInputError(
                f"{self.run_dir} holds a run made with different settings ({key}: {there!r} there, {now!r} "
                "now). Resume with the same settings, or choose another output folder."
            )
        for name, config in methods.items():
            there = self.data["methods"].get(name)
            if name in self.data["methods"] and there != config:
                detail = (_first_difference(there, config) if isinstance(there, dict) and isinstance(config, dict)
                          else ("configuration", there, config))
                raise BenchInputError(
                    f"{self.run_dir} holds images of method {name!r} made with another configuration "
                    f"({detail[0]}: {detail[1]!r} there, {detail[2]!r} now); resume with the same method "
                    "settings, or choose another output folder."
                )
        for prompt_id, text in prompts.items():
            if self.data["prompts"].get(prompt_id, text) != text:
                raise BenchInputError(
                    f"{self.run_dir} has prompt id {prompt_id!r} as {self.data['prompts'][prompt_id]!r}, the "
                    f"prompt set now says {text!r}; use another output folder for a changed prompt set (a text "
                    "file's ids are its line numbers: an added or removed line renumbers the rest; JSON Lines "
                    "rows can carry their own ids)."
                )
        self.data["fingerprint"] = fingerprint
        self.data["methods"].update(methods)
        self.data["prompts"].update(prompts)
        self.data["categories"].update(categories)
        self.data["seeds"] = list(dict.fromkeys([*self.data["seeds"], *seeds]))

    def all_jobs(self) -> list[tuple[str, str, int]]:
        """(method, prompt id, seed) of every image any run of the folder asked for, in report order."""
        return [
            (method, prompt_id, seed)
            for prompt_id in self.data["prompts"]
            for seed in self.data["seeds"]
            for method in self.data["methods"]
        ]

    def save(self, **extra) -> None:
        self.data.update(extra)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / BENCH_FILE, self.data)


def gather(run_dir: Path, ledger: Ledger, requested: set, scorer_key: dict | None) -> list[dict]:
    """Every record of the folder, in report order: the images this run asked for (a missing
    one becomes a failed record) and those earlier runs made. Metrics from another scorer than
    ``scorer_key`` are hidden (``scored_by`` kept) so that one report never mixes two CLIP
    models; the judges' metrics stay (``metrics`` None when there are none)."""
    records = []
    for method, prompt_id, seed in ledger.all_jobs():
        path = record_path(run_dir, method, prompt_id, seed)
        record = read_record(path)
        if record is None:
            if (method, prompt_id, seed) not in requested:
                continue  # never asked for (another run's method at this run's new seed, say)
            record = new_record(method, prompt_id, ledger.data["prompts"][prompt_id],
                                ledger.data["categories"].get(prompt_id), seed)
            record["error"] = (
                f"unreadable record {path.relative_to(run_dir).as_posix()} (not a record's JSON: edited or damaged); "
                "re-run to redo the image" if path.exists() else
                "no record: the process that owned this image stopped before making it; re-run to finish")
        elif record.get("metrics") is not None and record.get("scorer") != scorer_key:
            record = {**record, "metrics": judge_metrics(record) or None, "scored_by": record.get("scorer")}
        records.append(record)
    return records
