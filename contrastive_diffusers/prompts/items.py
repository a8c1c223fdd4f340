"""The prompt of a set: :class:`PromptItem`, and the word splitting every prompt tool shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["PromptItem", "SAFE_ID", "WORD", "prompt_words", "token_groups_problem"]

#: Ids name folders of a benchmark run, so they must be safe as file names.
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~+-]{0,199}")
#: A word of a prompt: letters and digits, with inner apostrophes and hyphens ("man's", "t-shirt").
WORD = re.compile(r"\w+(?:['\-]\w+)*")


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
        if not isinstance(self.id, str) or not SAFE_ID.fullmatch(self.id):
            raise ValueError(
                f"PromptItem id {self.id!r} is not filesystem-safe: use 1-200 characters from "
                "letters, digits and . _ ~ + - (not starting with . ~ + -)."
            )
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"PromptItem {self.id!r}: the prompt must be a non-empty string.")
        if self.category is not None and not isinstance(self.category, str):
            raise ValueError(f"PromptItem {self.id!r}: category must be a string or None.")
        if self.token_groups is not None:
            problem = token_groups_problem(self.token_groups)
            if problem:
                raise ValueError(f"PromptItem {self.id!r}: {problem}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"PromptItem {self.id!r}: metadata must be a dict.")


def token_groups_problem(groups) -> str | None:
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        return 'token_groups must be a list of lists of words, e.g. [["red", "car"], ["blue", "bench"]].'
    for i, group in enumerate(groups):
        if not group or not all(isinstance(w, str) and w.strip() for w in group):
            return f"token group {i} must be a non-empty list of non-empty words (got {group!r})."
    return None


def prompt_words(text: str) -> list[str]:
    return WORD.findall(text)
