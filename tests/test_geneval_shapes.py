"""GenEval's rules on rendered ShapesWorld scenes, the oracle's reader standing in for the
detector and CLIP: where they must agree with the oracle, and the documented places where
GenEval decides differently. Also the built-in GenEval prompt set against the published file."""

import json
from collections import Counter
from pathlib import Path

import pytest

from contrastive_diffusers.eval import load_prompt_set
from contrastive_diffusers.eval.judges.geneval_shapes import oracle_agreement, shapes_geneval_verdicts, spec_to_geneval
from contrastive_diffusers.prompts import load_prompt_file
from contrastive_diffusers.prompts.geneval import GENEVAL_TAGS, geneval_metadata, geneval_prompts
from contrastive_diffusers.shapes.oracle import check
from contrastive_diffusers.shapes.render import render
from contrastive_diffusers.shapes.spec import CaptionSpec, ObjectSpec
from contrastive_diffusers.shapes.world import Scene, ShapeObject

PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "geneval" / "evaluation_metadata.jsonl"
needs_published = pytest.mark.skipif(not PUBLISHED.exists(), reason="GenEval's evaluation_metadata.jsonl not in ../shared")

RED_CIRCLE_AND_BLUE_SQUARE = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")))
TWO_RED_SQUARES = CaptionSpec((ObjectSpec("square", "red", count=2, exact=True),))
CIRCLE_LEFT_OF_SQUARE = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), (0, "left of", 1))


def scene(*objects):
    return render(Scene(tuple(ShapeObject(shape, colour, size, x=x, y=y) for shape, colour, size, x, y in objects)), 64)


def both(image, spec):
    """(GenEval's verdict, the oracle's verdict)."""
    return shapes_geneval_verdicts([image], [spec])[0]["correct"], check(image, spec).success


def test_spec_rows():
    assert spec_to_geneval(RED_CIRCLE_AND_BLUE_SQUARE) == {
        "tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                         {"class": "square", "count": 1, "color": "blue"}]}
    assert spec_to_geneval(TWO_RED_SQUARES) == {
        "tag": "counting", "include": [{"class": "square", "count": 2, "color": "red"}],
        "exclude": [{"class": "square", "count": 3}]}
    # GenEval's target row comes first; the subject points at it.
    assert spec_to_geneval(CIRCLE_LEFT_OF_SQUARE)["include"] == [
        {"class": "square", "count": 1, "color": "blue"},
        {"class": "circle", "count": 1, "color": "red", "position": ["left of", 0]}]
    assert spec_to_geneval(CaptionSpec((ObjectSpec("circle", size="small"),))) is None


def test_agrees_with_the_oracle_on_true_scenes_and_swapped_colours():
    right = scene(("circle", "red", "large", 0.25, 0.5), ("square", "blue", "large", 0.75, 0.5))
    swapped = scene(("circle", "blue", "large", 0.25, 0.5), ("square", "red", "large", 0.75, 0.5))
    assert both(right, RED_CIRCLE_AND_BLUE_SQUARE) == (True, True)
    assert both(swapped, RED_CIRCLE_AND_BLUE_SQUARE) == (False, False)
    assert both(right, CIRCLE_LEFT_OF_SQUARE) == (True, True)
    mirrored = scene(("circle", "red", "large", 0.75, 0.5), ("square", "blue", "large", 0.25, 0.5))
    assert both(mirrored, CIRCLE_LEFT_OF_SQUARE) == (False, False)
    two = scene(("square", "red", "large", 0.25, 0.3), ("square", "red", "large", 0.7, 0.7))
    three = scene(("square", "red", "small", 0.2, 0.2), ("square", "red", "small", 0.8, 0.2),
                  ("square", "red", "small", 0.5, 0.8))
    assert both(two, TWO_RED_SQUARES) == (True, True)
    assert both(three, TWO_RED_SQUARES) == (False, False)


def test_where_geneval_decides_differently():
    # Colour is read on the best circle only (equal scores: the reader's largest first).
    big_blue_small_red = scene(("circle", "blue", "large", 0.3, 0.5), ("circle", "red", "small", 0.75, 0.5))
    assert both(big_blue_small_red, CaptionSpec((ObjectSpec("circle", "red"),))) == (False, True)
    # Counting counts the class: a third square of another colour breaks "two red squares".
    plus_blue = scene(("square", "red", "small", 0.2, 0.2), ("square", "red", "small", 0.8, 0.2),
                      ("square", "blue", "small", 0.5, 0.8))
    assert both(plus_blue, TWO_RED_SQUARES) == (False, True)
    # A relation must be the main direction: up-left by (0.35, 0.5) of the side is "left of" only
    # (shrunk offset 0.46 vs 0.70 of its length), though the circle is 0.35 of the side higher.
    diagonal = scene(("circle", "red", "large", 0.25, 0.3), ("square", "blue", "large", 0.75, 0.65))
    above = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), (0, "above", 1))
    assert both(diagonal, above) == (False, True)
    assert both(diagonal, CIRCLE_LEFT_OF_SQUARE) == (True, True)


def test_oracle_agreement_hand_computed():
    stats = oracle_agreement([1, 1, 0, 0], [1, 0, 0, 0], ["a", "a", "b", "b"])
    assert stats["accuracy"] == 0.75 and stats["geneval_only"] == 1 and stats["both_wrong"] == 2
    # phi = (1/4 - 1/2 * 1/4) / (1/2 * sqrt(1/4 * 3/4))
    assert stats["pearson_r"] == pytest.approx(0.125 / (0.5 * (0.75 * 0.25) ** 0.5))
    assert stats["per_category"] == {"a": {"n": 2, "accuracy": 0.5}, "b": {"n": 2, "accuracy": 1.0}}
    assert oracle_agreement([1, 1], [1, 0])["pearson_r"] is None
    with pytest.raises(ValueError, match="as many GenEval as oracle verdicts"):
        oracle_agreement([1], [1, 0])


def test_prompt_set():
    items = load_prompt_set("geneval")
    assert len(items) == 553 and items[0].id == "geneval-00000" and items[0].prompt == "a photo of a bench"
    assert Counter(i.category for i in items) == {
        "position": 100, "color_attr": 100, "two_object": 99, "colors": 94, "single_object": 80, "counting": 80}
    counting = load_prompt_set("geneval:counting")
    assert len(counting) == 80 and all(i.metadata["exclude"] for i in counting)
    assert [i.id for i in geneval_prompts("position")] == [i.id for i in items if i.category == "position"]
    assert len(geneval_metadata(seed=0, per_task=5)) <= 80 + 25
    with pytest.raises(ValueError, match="Unknown GenEval task 'color'; the tasks are: " + ", ".join(GENEVAL_TAGS)):
        geneval_prompts("color")


@needs_published
def test_regenerated_suite_equals_the_published_file():
    published = [json.loads(line) for line in PUBLISHED.read_text().splitlines() if line.strip()]
    assert geneval_metadata() == published
    from_file = load_prompt_file(PUBLISHED)
    built_in = geneval_prompts()
    assert [(i.prompt, i.category, i.token_groups, i.metadata) for i in built_in] == [
        (i.prompt, i.category, i.token_groups, i.metadata) for i in from_file]
