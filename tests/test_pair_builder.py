"""The pair builder: categories and stages of perturbations, its keep / reject logic with a
deterministic scorer, resumed, and its candidate cache."""

import hashlib
import json

import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval.pair_builder import build_pairs, category_and_stage
from contrastive_diffusers.prompts import PromptItem, contrast_set
from contrastive_diffusers.training.data import DataError
from contrastive_diffusers.training.pairs import load_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


def test_category_and_stage_mapping():
    item = PromptItem("x", "a red car and a blue bench", token_groups=[["red", "car"], ["blue", "bench"]])
    found = {v.metadata["perturbation"]: category_and_stage(item, v) for v in contrast_set(item)}
    # two objects: stage 2 (two-object binding), also when one object is replaced
    assert found == {"swap_attributes": ("color", 2), "replace_object": ("shape", 2)}
    single = PromptItem("s", "a red car", token_groups=[["red", "car"]])
    assert [category_and_stage(single, v) for v in contrast_set(single)] == [("shape", 1)]
    dog = PromptItem("d", "a dog and a red bench", token_groups=[["dog"], ["red", "bench"]])
    found = {v.metadata["perturbation"]: category_and_stage(dog, v) for v in contrast_set(dog)}
    assert found == {"swap_objects": ("color", 2), "replace_object": ("shape", 2)}
    # every colour the parser knows, not only the A&E set's eleven ("silver": a colour before a material)
    for a, b in (("cyan", "magenta"), ("grey", "silver")):
        item = PromptItem("k", f"a {a} square and a {b} circle", token_groups=[[a, "square"], [b, "circle"]])
        assert category_and_stage(item, contrast_set(item)[0]) == ("color", 2)
    wood = PromptItem("w", "a wooden car and a metallic bench", token_groups=[["wooden", "car"], ["metallic", "bench"]])
    assert category_and_stage(wood, contrast_set(wood)[0]) == ("texture", 2)
    three = PromptItem("t", "a cat and a dog and a car", token_groups=[["cat"], ["dog"], ["car"]])
    assert [category_and_stage(three, v) for v in contrast_set(three)] == [("complex", 3)]
    # by the swapped words only: the shared "red" is not what changes
    big = PromptItem("b", "a big red car and a small red bench", token_groups=[["big", "red", "car"], ["small", "red", "bench"]])
    assert category_and_stage(big, contrast_set(big)[0]) == ("non-spatial", 2)
    # a relation: swapping the objects changes only their order
    left = PromptItem("l", "a cat to the left of a dog", token_groups=[["cat"], ["dog"]])
    found = {v.metadata["perturbation"]: category_and_stage(left, v) for v in contrast_set(left)}
    assert found["swap_objects"] == ("spatial", 2)
    # compound nouns split as the contrast captions split them: "teddy" and "fire" are no attributes
    toys = PromptItem("c", "a teddy bear on a fire truck", token_groups=[["teddy", "bear"], ["fire", "truck"]])
    assert [category_and_stage(toys, v) for v in contrast_set(toys)] == [("spatial", 2)]
    # materials are attributes: "a glass bowl on a metal table" swaps textures both ways
    bowl = PromptItem("g", "a glass bowl on a metal table", token_groups=[["glass", "bowl"], ["metal", "table"]])
    found = {v.metadata["perturbation"]: category_and_stage(bowl, v) for v in contrast_set(bowl)}
    assert found["swap_attributes"] == ("texture", 2) and found["swap_objects"] == ("texture", 2)
    # every material the contrast captions know is a texture here too
    cup = PromptItem("m", "a bamboo cup and a denim bag", token_groups=[["bamboo", "cup"], ["denim", "bag"]])
    assert category_and_stage(cup, contrast_set(cup)[0]) == ("texture", 2)
    # a negation: swapping says which object is absent, not where
    for text in ("a dog and no cat", "a cat without a hat", "a dog but isn't a cat", "a dog and not a very big cat"):
        item = PromptItem("n", text, token_groups=[[text.split()[1]], [text.split()[-1]]])
        swap = next(v for v in contrast_set(item) if v.metadata["perturbation"] == "swap_objects")
        assert category_and_stage(item, swap) == ("non-spatial", 2)
    # a negated relation: the swap still moves the objects ("isn't" split as "is n't")
    for text, first in (("a cat that is not on a dog", "cat"), ("a cat that isn't on a dog", "cat"),
                        ("a no parking sign left of a dog", "sign")):  # "a no parking sign" is no denial
        item = PromptItem("r", text, token_groups=[[first], ["dog"]])
        swap = next(v for v in contrast_set(item) if v.metadata["perturbation"] == "swap_objects")
        assert category_and_stage(item, swap) == ("spatial", 2)


class _FakePipe:
    """Draws one flat colour per (prompt, seed) and remembers which prompt made which image."""

    def __init__(self):
        self.made = {}
        self.calls = 0

    def __call__(self, prompts, generator=None, **kwargs):
        from types import SimpleNamespace

        self.calls += 1
        seed = int(generator.initial_seed())
        digest = hashlib.sha512(f"{prompts[0]}|{seed}".encode()).digest()[:48]
        image = Image.frombytes("RGB", (4, 4), digest)
        self.made[image.tobytes()] = prompts[0]
        return SimpleNamespace(images=[image])


def _fake_scorer(made, fail_negatives_of=()):
    """1 when the image was generated from the text, 0 otherwise; images made from prompts in
    ``fail_negatives_of`` score 0 everywhere (so they are rejected)."""

    def score(images, texts):
        out = []
        for image, text in zip(images, texts):
            source = made[image.convert("RGB").tobytes()]
            out.append(0.0 if source in fail_negatives_of else float(source == text))
        return torch.tensor(out)

    return score


def test_builder_keeps_consistent_pairs_rejects_others_and_resumes(tmp_path):
    items = [
        PromptItem("a", "a red car and a blue bench", token_groups=[["red", "car"], ["blue", "bench"]]),
        PromptItem("b", "a cat and a dog and a car", token_groups=[["cat"], ["dog"], ["car"]]),
        PromptItem("c", "a dog and a red bench", token_groups=[["dog"], ["red", "bench"]]),
    ]
    variants = [v for item in items for v in contrast_set(item)]
    assert len(variants) == 5
    pipe = _FakePipe()
    options = {"num_inference_steps": 2, "height": 8, "width": 8}
    rejected_prompt = variants[0].prompt  # its negatives score 0 on both texts -> rejected
    report = build_pairs(items, pipe, tmp_path / "built", scorer=_fake_scorer(pipe.made, {rejected_prompt}),
                         seeds=(0, 1), options=options)
    # 3 prompts + 5 perturbed prompts, 2 seeds each
    # (a prompt's candidates serve all its perturbations: 2 prompts x 2 seeds reused)
    assert report.generated == 16 and report.reused == 4 and pipe.calls == 16
    assert len(report.kept) == 4 and len(report.rejected) == 1
    assert report.rejected[0]["perturbed"] == rejected_prompt
    assert "no negative candidate" in report.rejected[0]["reason"]
    pairs = load_pairs(tmp_path / "built")
    assert sorted((p.category, p.stage) for p in pairs) == [("color", 2), ("complex", 3), ("shape", 2), ("shape", 2)]
    for pair in pairs:  # the positive came from the caption, the negative from its perturbation
        assert pipe.made[Image.open(pair.positive).convert("RGB").tobytes()] == pair.caption
        assert pipe.made[Image.open(pair.negative).convert("RGB").tobytes()] != pair.caption
    build = json.loads((tmp_path / "built" / "build.json").read_text())
    assert len(build["kept"][0]["candidates"]) == 4  # 2 roles x 2 seeds

    # a re-run reuses every candidate; a margin above the score gap (1) rejects everything
    with pytest.warns(UserWarning, match="kept no pair .* lower the margin"):
        again = build_pairs(items, pipe, tmp_path / "built", scorer=_fake_scorer(pipe.made), seeds=(0, 1),
                            options=options, margin=1.5)
    assert again.generated == 0 and again.reused == 20 and pipe.calls == 16
    assert again.kept == [] and len(again.rejected) == 5
    with pytest.raises(DataError, match="has no pairs.jsonl"):  # the earlier pairs were of another margin
        load_pairs(tmp_path / "built")


def test_builder_with_the_tiny_pipeline_and_a_clip_scorer(tmp_path, tiny_clip_dir):
    from contrastive_diffusers.eval.clip_score import ClipScorer
    from contrastive_diffusers.models.tiny import tiny_pipeline

    item = PromptItem("a", "a red car and a blue bench", token_groups=[["red", "car"], ["blue", "bench"]])
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = build_pairs([item], tiny_pipeline("sd1"), tmp_path / "clip",
                             scorer=ClipScorer.from_pretrained(tiny_clip_dir), seeds=(0,),
                             options={"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 7.5})
    assert report.generated == 3 * 1 and len(report.kept) + len(report.rejected) == 2
    # random weights: whether a pair is kept is chance; a folder without pairs says so
    assert any("kept no pair" in str(w.message) for w in caught) == (not report.kept)
    build = json.loads((tmp_path / "clip" / "build.json").read_text())
    for entry in build["kept"] + build["rejected"]:
        for c in entry["candidates"]:
            gap = c["score_prompt"] - c["score_perturbed"]
            assert c["valid"] == ((gap if c["role"] == "positive" else -gap) > 0)


def test_candidate_cache_key_names_the_model_and_the_method():
    from contrastive_diffusers.guidance.methods import get_method
    from contrastive_diffusers.eval.pair_builder import _key, _source

    class Pipe:
        def __init__(self, name):
            self.config = {"_name_or_path": name}

    options = {"num_inference_steps": 2}
    a = _key("a cat", "none", 0, options, _source(Pipe("model-a"), None))
    assert a == _key("a cat", "none", 0, options, _source(Pipe("model-a"), None))
    assert a != _key("a cat", "none", 0, options, _source(Pipe("model-b"), None))  # another model: no reuse
    conform = get_method("conform")
    assert _key("a cat", "conform", 0, options, _source(Pipe("m"), conform)) != _key(
        "a cat", "conform", 0, options, _source(Pipe("m"), conform.with_schedule(step_size=1.0))
    )
    # the token groups a guided image followed, and the sampler, decide its pixels too
    source = _source(Pipe("m"), conform)
    assert _key("a cat", "conform", 0, options, source, [["cat"]]) != _key("a cat", "conform", 0, options, source,
                                                                            [["a"], ["cat"]])
    euler = Pipe("m")
    euler.scheduler = type("EulerDiscreteScheduler", (), {"config": {"steps_offset": 1}})()
    assert _key("a cat", "none", 0, options, _source(euler, None)) != a
