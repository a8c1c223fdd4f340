"""The per-image job shared by ``generate`` and ``bench``: why a method cannot apply."""

from contrastive_diffusers.guidance import Conform, SynGen
from contrastive_diffusers.guidance.tokens import resolve_groups
from contrastive_diffusers.models.tiny import tiny_tokenizer
from contrastive_diffusers.runs import inapplicable_methods


def test_inapplicable_reason_shows_the_automatic_parse():
    prompt = "a cat wearing a hat"
    groups = resolve_groups(tiny_tokenizer(), prompt, "auto")
    assert [list(g.words) for g in groups] == [["cat"], ["hat"]]
    methods = {"none": None, "conform": Conform(), "syngen": SynGen()}
    problems = inapplicable_methods(groups, prompt, methods, spec="auto")
    assert set(problems) == {"syngen"}  # two objects: CONFORM applies; no modifier: SynGen does not
    assert "SynGen binds modifiers" in problems["syngen"]
    assert "token_groups='auto' parsed 'a cat wearing a hat' into [['cat'], ['hat']]" in problems["syngen"]


def test_inapplicable_reason_for_explicit_groups_has_no_parser_note():
    prompt = "a red cat"
    groups = resolve_groups(tiny_tokenizer(), prompt, [["red", "cat"]])
    problems = inapplicable_methods(groups, prompt, {"conform": Conform()}, spec=[["red", "cat"]])
    assert "CONFORM needs at least two token groups" in problems["conform"]
    assert "automatic prompt parser" not in problems["conform"]
