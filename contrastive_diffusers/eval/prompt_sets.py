"""The built-in prompt sets by name, and prompt files by path: what ``bench --prompts`` takes.

The registry sits here, above both :mod:`contrastive_diffusers.prompts` (Attend-and-Excite,
files) and :mod:`contrastive_diffusers.shapes` (the ShapesWorld sets, which need the world).
"""

from __future__ import annotations

from pathlib import Path

from ..prompts import ATTEND_AND_EXCITE_SUBSETS, PromptItem, attend_and_excite_prompts, load_prompt_file
from ..prompts.geneval import GENEVAL_TAGS, geneval_prompts
from ..shapes.prompts import shapes_prompts

__all__ = ["BUILTIN_PROMPT_SETS", "load_prompt_set"]

BUILTIN_PROMPT_SETS = (
    ("attend_and_excite",)
    + tuple(f"attend_and_excite:{s}" for s in ATTEND_AND_EXCITE_SUBSETS)
    + ("shapes", "shapes:test", "shapes:sample", "shapes:train")
    + ("geneval",) + tuple(f"geneval:{t}" for t in GENEVAL_TAGS)
)


def load_prompt_set(name_or_path: str) -> list[PromptItem]:
    """A built-in set (``"attend_and_excite"``, ``"attend_and_excite:<subset>"``, ``"shapes"`` =
    ``"shapes:test"``, ``"shapes:sample"`` (its first two prompts per category),
    ``"shapes:train"``: the ShapesWorld sets; ``"geneval"``, ``"geneval:<task>"``: GenEval's
    553 prompts with their evaluation rows) or a prompt file path (read with
    :func:`~contrastive_diffusers.prompts.load_prompt_file`, format picked from the name)."""
    name = str(name_or_path)
    if name in ("shapes", "shapes:test", "shapes:sample", "shapes:train"):
        # ShapesWorld: every item carries metadata["spec"], which the bench runner's oracle checks
        if name == "shapes:sample":  # the test set's own first prompts: the same ids mean the same prompts
            taken: dict[str, int] = {}
            sample = []
            for item in shapes_prompts("test"):
                if taken.get(item.category, 0) < 2:
                    taken[item.category] = taken.get(item.category, 0) + 1
                    sample.append(item)
            return sample
        return shapes_prompts("train" if name == "shapes:train" else "test")
    if name == "geneval" or name.startswith("geneval:"):
        return geneval_prompts(name.split(":", 1)[1] if ":" in name else None)
    if name == "attend_and_excite":
        return attend_and_excite_prompts()
    if name.startswith("attend_and_excite:"):
        return attend_and_excite_prompts(name.split(":", 1)[1])
    path = Path(name)
    # Something shaped like a path gets the missing-file error rather than the set-name one.
    if path.exists() or "/" in name or "\\" in name or path.suffix:
        try:
            return load_prompt_file(path)
        except FileNotFoundError as err:
            hint = f", or pass a built-in set name: {', '.join(BUILTIN_PROMPT_SETS)}."
            raise FileNotFoundError(str(err).removesuffix(".") + hint) from None
    raise ValueError(
        f"Unknown prompt set {name!r}: not a built-in set ({', '.join(BUILTIN_PROMPT_SETS)}) and "
        "no such file. A path to a prompt file (.txt, .jsonl, .tsv, .json) is also accepted."
    )
