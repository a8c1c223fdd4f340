"""BLIP captioning on a tiny random BLIP saved to disk, and CLIP text-text similarity."""

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval import ClipScorer
from contrastive_diffusers.eval.captioner import Captioner
from contrastive_diffusers.models.tiny import BLIP_WORDS, tiny_blip, tiny_clip


@pytest.fixture(scope="module")
def blip_folder(tiny_blip_dir):
    return tiny_blip_dir


@pytest.fixture(scope="module")
def captioner(blip_folder):
    return Captioner.from_pretrained(blip_folder, device="cpu")


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(3, 40, 48, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def scorer():
    model, processor = tiny_clip()
    return ClipScorer(model, processor, device="cpu")


def test_captions_are_deterministic_words(captioner, images):
    captions = captioner.caption(images)
    assert len(captions) == 3
    for caption in captions:
        assert isinstance(caption, str) and caption and caption == caption.strip()
        # tiny_blip never generates special tokens, so each caption has max_new_tokens words.
        assert len(caption.split()) == captioner.max_new_tokens
        assert set(caption.split()) <= set(BLIP_WORDS)
    assert len(set(captions)) > 1  # the captions depend on the image
    assert captioner.caption(images) == captions


def test_image_forms_caption_the_same(captioner, images):
    as_uint8 = captioner.caption(images)
    as_pil = captioner.caption([Image.fromarray(image) for image in images])
    as_float = captioner.caption(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    one_by_one = [captioner.caption(image)[0] for image in images]
    assert as_pil == as_uint8 and as_float == as_uint8 and one_by_one == as_uint8


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_size_does_not_change_captions(blip_folder, images, num_beams):
    captions = [
        Captioner.from_pretrained(blip_folder, device="cpu", batch_size=size, num_beams=num_beams).caption(images)
        for size in (1, 2, 3)
    ]
    assert captions[0] == captions[1] == captions[2]
    assert all(captions[0])


def test_max_new_tokens_caps_greedy_captions(blip_folder, captioner, images):
    short = Captioner.from_pretrained(blip_folder, device="cpu", max_new_tokens=4).caption(images)
    for caption, full in zip(short, captioner.caption(images)):
        assert len(caption.split()) == 4
        assert full.split()[:4] == caption.split()  # greedy: a prefix of the longer caption


def test_tiny_blip_is_seeded():
    (a, _), (b, _), (c, _) = tiny_blip(0), tiny_blip(0), tiny_blip(1)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    patches = [model.vision_model.embeddings.patch_embedding.weight for model in (a, c)]
    assert not torch.equal(*patches)


def test_captioner_errors(tmp_path, blip_folder):
    missing = tmp_path / "missing"
    with pytest.raises(OSError, match="Could not load a BLIP captioning model") as info:
        Captioner.from_pretrained(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ValueError, match="must be positive"):
        Captioner.from_pretrained(blip_folder, device="cpu", batch_size=0)


def test_text_similarity_hand_computed(scorer):
    texts_a = ["a red car and a blue bench", "a cat", "a dog with a hat"]
    texts_b = ["a car next to a bench", "a photo of a cat", "a dog"]
    similarity = scorer.text_similarity(texts_a, texts_b)
    assert similarity.shape == (3,) and similarity.dtype == torch.float32 and similarity.device.type == "cpu"
    expected = (scorer.text_embeddings(texts_a) * scorer.text_embeddings(texts_b)).sum(-1)
    torch.testing.assert_close(similarity, expected)
    torch.testing.assert_close(scorer.text_similarity(texts_a, texts_a), torch.ones(3))
    # Attend-and-Excite: the prompt embedded with the ImageNet templates, the caption plain.
    ensembled = torch.stack([scorer.ensembled_text_embedding(a) for a in texts_a])
    ensembled = (ensembled * scorer.text_embeddings(texts_b)).sum(-1)
    torch.testing.assert_close(scorer.text_similarity(texts_a, texts_b, ensemble_a=True), ensembled)
    torch.testing.assert_close(scorer.text_similarity("a cat", "a cat"), torch.ones(1))


def test_text_similarity_errors(scorer):
    with pytest.raises(ValueError, match="2 texts_a but 3 texts_b"):
        scorer.text_similarity(["a", "b"], ["a", "b", "c"])


def test_caption_similarity_end_to_end(captioner, scorer, images):
    prompts = ["a cat and a dog"] * 3
    similarity = scorer.text_similarity(prompts, captioner.caption(images), ensemble_a=True)
    assert similarity.shape == (3,) and torch.isfinite(similarity).all()
    assert (similarity.abs() <= 1 + 1e-5).all()
