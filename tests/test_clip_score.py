"""CLIP scoring against torchmetrics and hand-computed values, on a tiny random CLIP saved to disk."""

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval import ClipScorer, aggregate_clip_score, split_prompt
from contrastive_diffusers.eval.templates import IMAGENET_TEMPLATES, template_texts

PROMPTS = ["a red car and a blue bench", "a green cat with a yellow hat", "a circle", "a dog"]


@pytest.fixture(scope="module")
def clip_folder(tiny_clip_dir):
    return tiny_clip_dir


@pytest.fixture(scope="module")
def scorer(clip_folder):
    return ClipScorer.from_pretrained(clip_folder, device="cpu")


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)


class _TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 expects get_*_features to return tensors; transformers 5 returns outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def _torchmetrics_loader(folder):
    from transformers import CLIPModel, CLIPProcessor

    return lambda: (_TensorFeatures(CLIPModel.from_pretrained(folder)), CLIPProcessor.from_pretrained(folder))


def test_clip_score_matches_torchmetrics(clip_folder, scorer, images):
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score
    from torchmetrics.multimodal import CLIPScore

    loader = _torchmetrics_loader(clip_folder)
    chw = torch.from_numpy(images).permute(0, 3, 1, 2)
    ours = scorer.clip_score(images, PROMPTS, clamp=False)
    per_image = torch.stack([tm_clip_score(chw[i], PROMPTS[i], model_name_or_path=loader) for i in range(4)])
    # torchmetrics clamps at 0: compare where it is positive, and the clamped values everywhere.
    torch.testing.assert_close(scorer.clip_score(images, PROMPTS), per_image.float(), atol=1e-3, rtol=1e-4)
    metric = CLIPScore(model_name_or_path=loader)
    metric.update(chw, PROMPTS)
    torch.testing.assert_close(aggregate_clip_score(ours), metric.compute().float(), atol=1e-3, rtol=1e-4)


def test_image_forms_score_the_same(scorer):
    pixels = np.random.RandomState(1).randint(0, 256, size=(2, 48, 40, 3)).astype(np.uint8)
    as_uint8 = scorer.clip_score(pixels, PROMPTS[:2])
    as_float = scorer.clip_score(pixels.astype(np.float32) / 255, PROMPTS[:2])
    as_tensor = scorer.clip_score(torch.from_numpy(pixels).permute(0, 3, 1, 2), PROMPTS[:2])
    as_pil = scorer.clip_score([Image.fromarray(p) for p in pixels], PROMPTS[:2])
    as_int64 = scorer.clip_score(torch.from_numpy(pixels.astype(np.int64)), PROMPTS[:2])  # torchmetrics' examples
    for other in (as_float, as_tensor, as_pil, as_int64):
        torch.testing.assert_close(other, as_uint8)


def test_object_similarity_hand_computed(scorer, images):
    out = scorer.object_similarity(images[:2], PROMPTS[:2])
    image_embeds = scorer.image_embeddings(images[:2])

    def ensembled(text):  # as A&E's metrics/imagenet_utils.get_embedding_for_prompt writes the texts
        texts = [t.format(text).replace("a a", "a").replace("the a", "a") for t in IMAGENET_TEMPLATES]
        embeds = scorer.text_embeddings(texts)
        return torch.nn.functional.normalize(embeds.mean(0), dim=-1)

    assert out["full"][0].item() == pytest.approx((image_embeds[0] @ ensembled(PROMPTS[0])).item(), abs=1e-5)
    car = (image_embeds[0] @ ensembled("a red car")).item()
    bench = (image_embeds[0] @ ensembled("a blue bench")).item()
    assert out["objects"][0] == pytest.approx({"a red car": car, "a blue bench": bench}, abs=1e-5)
    assert out["min_object"][0].item() == pytest.approx(min(car, bench), abs=1e-5)
    assert list(out["objects"][1]) == ["a green cat", "a yellow hat"]
    single = scorer.object_similarity(images[2:], PROMPTS[2:])  # one object: the protocol skips it
    assert torch.isnan(single["min_object"]).all() and single["full"].isfinite().all()


def test_a_repeated_object_has_a_minimum_in_the_bench_metrics_too(scorer, images):
    """"a cat and a cat" splits into two equal sub-prompts: the protocol's minimum exists (it is
    their one similarity), in the bench's metrics as in object_similarity."""
    from contrastive_diffusers.eval.metrics import image_metrics

    twice = scorer.object_similarity(images[:1], ["a cat and a cat"])
    metrics = image_metrics(scorer, images[:1], ["a cat and a cat"])[0]
    assert twice["objects"][0] == pytest.approx({"a cat": float(twice["min_object"][0])}, abs=1e-6)
    assert metrics["metrics"]["min_object_similarity"] == pytest.approx(float(twice["min_object"][0]), abs=1e-6)


def test_template_texts_are_cleaned_as_the_authors_code_cleans_them():
    texts = template_texts("a red car")
    assert texts[IMAGENET_TEMPLATES.index("a photo of a {}.")] == "a photo of a red car."
    assert texts[IMAGENET_TEMPLATES.index("a photo of the {}.")] == "a photo of a red car."
    assert texts[IMAGENET_TEMPLATES.index("a photo of many {}.")] == "a photo of many a red car."
    # plain substring replacements, as there: inside words too
    assert template_texts("a banana and a cat")[IMAGENET_TEMPLATES.index("itap of my {}.")] == "itap of my a bananand a cat."
    assert template_texts("apple")[IMAGENET_TEMPLATES.index("a photo of the {}.")] == "a photo of apple."


def test_split_prompt_falls_back_to_token_groups():
    assert split_prompt("a red car and a blue bench.") == ["a red car", "a blue bench"]
    assert split_prompt("a cat with a hat") == ["a cat", "a hat"]
    assert split_prompt("a brown bear next to a white dog", [["brown", "bear"], ["white", "dog"]]) == [
        "a brown bear",
        "a white dog",
    ]
    assert split_prompt("a circle") == ["a circle"]
    # " and " first, as A&E's compute_clip_similarity.py splits; " with " only without it
    assert split_prompt("a cat with a hat and a dog") == ["a cat with a hat", "a dog"]
    assert split_prompt("a red cube and a blue ball and a green cone") == ["a red cube", "a blue ball", "a green cone"]


def test_antonym_scores_are_pair_probabilities(scorer, images):
    good = scorer.antonym_scores(images, pairs=[("Good photo.", "Bad photo."), ("Sharp photo.", "Blurry photo.")])
    assert good.shape == (4, 2) and ((good > 0) & (good < 1)).all()
    swapped = scorer.antonym_scores(images, pairs=[("Bad photo.", "Good photo.")])
    torch.testing.assert_close(swapped[:, 0], 1 - good[:, 0], atol=1e-6, rtol=0)


def test_templates_are_the_80_imagenet_prompts():
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)


def test_bad_input_errors(scorer, images, tmp_path):
    with pytest.raises(ValueError, match="4 images but 3 prompts"):
        scorer.clip_score(images, PROMPTS[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scorer.clip_score(images.astype(np.float32), PROMPTS)  # 0..255 floats
    with pytest.raises(ValueError, match="NaN or infinite"):  # not scored as a black image
        scorer.clip_score(np.full((1, 8, 8, 3), np.nan, dtype=np.float32), PROMPTS[:1])
    with pytest.raises(ValueError, match="0..255"):
        scorer.clip_score(np.full((1, 8, 8, 3), 256, dtype=np.int32), PROMPTS[:1])
    with pytest.raises(ValueError, match="3 channels"):
        scorer.clip_score(np.zeros((1, 8, 8, 4), dtype=np.uint8), PROMPTS[:1])
    with pytest.raises(OSError, match="CLIP model folder .*missing' does not exist"):
        ClipScorer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="Could not load a CLIP model from .*empty"):
        ClipScorer.from_pretrained(tmp_path / "empty")
