"""GenEval's judge on tiny random Mask2Former and CLIP models saved to folders: the detector's
read-out (hand-computed), shapes, batching, determinism, the colour classifier, and
GenEvalJudge.score / summarize end to end."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval.judges.geneval import GenEvalJudge
from contrastive_diffusers.eval.judges.geneval_colors import COLOR_TEMPLATES, ClipColorClassifier, object_crop
from contrastive_diffusers.eval.judges.geneval_detector import Mask2FormerDetector, detector_classes, mask_boxes
from contrastive_diffusers.eval.judges.geneval_rules import Detection, GenEvalSettings
from contrastive_diffusers.prompts.geneval import GENEVAL_OBJECTS, geneval_prompts

#: COCO's thing classes as the Mask2Former COCO checkpoints' configs name them.
COCO_NAMES = [{"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}.get(n, n)
              for n in GENEVAL_OBJECTS]
SMALL = (64, 96)  # detector input: short side, long side limit


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    """Mask2Former with the real COCO-instance layout (Swin backbone with four stages, pixel
    decoder, masked-attention decoder, 80 COCO labels), at a tiny width and depth."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=7,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=20,
        id2label=dict(enumerate(COCO_NAMES)), label2id={n: i for i, n in enumerate(COCO_NAMES)},
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-mask2former")
    model = Mask2FormerForUniversalSegmentation(config).eval()
    # Tilt the random class head towards "cake", which the colour row of the end-to-end test
    # names, so that its colour branch runs whatever order transformers draws the weights in.
    with torch.no_grad():
        model.class_predictor.bias[COCO_NAMES.index("cake")] += 4.0
    model.save_pretrained(folder)
    Mask2FormerImageProcessorPil().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def detector(detector_dir):
    return Mask2FormerDetector.from_pretrained(detector_dir, "cpu", torch.float32, test_size=SMALL)


@pytest.fixture(scope="module")
def colour_classifier(tiny_clip_dir):
    return ClipColorClassifier.from_pretrained(str(tiny_clip_dir), "cpu", torch.float32, batch_size=2)


def random_image(seed, size=(64, 64)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_detector_labels_are_geneval_names():
    classes = detector_classes(dict(enumerate(COCO_NAMES)))
    assert classes == list(GENEVAL_OBJECTS)
    panoptic = dict(enumerate(COCO_NAMES + ["sky-other-merged"]))
    assert detector_classes(panoptic)[-1] is None
    with pytest.raises(ValueError, match="lack 1 of GenEval's 80 COCO classes \\(toothbrush\\)"):
        detector_classes(dict(enumerate(COCO_NAMES[:-1])))


def test_mask_boxes_are_tight_and_end_exclusive():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert mask_boxes(masks).tolist() == [[3.0, 2.0, 7.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def test_read_out_hand_computed(detector):
    cat = GENEVAL_OBJECTS.index("cat")
    class_logits = torch.full((1, 81), -1e4)
    class_logits[0, cat], class_logits[0, 80] = math.log(0.6), math.log(0.4)  # 80: no object
    mask_logits = torch.full((1, 8, 8), -2.0)
    mask_logits[0, 2:5, 3:7] = 2.0
    found = detector._read_out(class_logits, mask_logits, (8, 8), (8, 8), (8, 8))
    assert len(found) == 1 and found[0].label == "cat"
    # class probability x mean sigmoid inside the mask
    assert found[0].score == pytest.approx(0.6 / (1 + math.exp(-2)), rel=1e-5)
    assert found[0].box == (3.0, 2.0, 7.0, 5.0)
    assert found[0].mask.sum() == 12 and found[0].mask[2:5, 3:7].all()
    # A mask lying only in the padding (rows 4-7 of an input whose image is 4 rows) is empty.
    mask_logits = torch.full((1, 8, 8), -2.0)
    mask_logits[0, 5:8, :] = 2.0
    assert detector._read_out(class_logits, mask_logits, (8, 8), (4, 8), (4, 8)) == []


def test_detections_shapes_batching_and_determinism(detector_dir):
    images = [random_image(k) for k in range(3)] + [random_image(3, (48, 64))]
    batched = Mask2FormerDetector.from_pretrained(detector_dir, "cpu", torch.float32, batch_size=4, test_size=SMALL)
    single = Mask2FormerDetector.from_pretrained(detector_dir, "cpu", torch.float32, batch_size=1, test_size=SMALL)
    together, alone, again = batched(images), single(images), batched(images)
    assert len(together) == 4
    for image, a, b, c in zip(images, together, alone, again):
        assert a and len(a) == len(b) == len(c) <= 100
        for x, y, z in zip(a, b, c):
            assert x.label == y.label and x.label in GENEVAL_OBJECTS
            assert x.score == pytest.approx(y.score, abs=1e-5) and x.score == z.score and 0 < x.score <= 1
            assert x.mask.shape == (image.height, image.width) and x.mask.dtype == bool
            assert (x.mask == y.mask).mean() > 0.999 and (x.mask == z.mask).all()
            rows, cols = np.nonzero(x.mask)
            assert x.box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_object_crop_greys_the_background_and_crops_the_box():
    image = Image.fromarray(np.full((6, 8, 3), 200, dtype=np.uint8))
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:4] = True
    crop = np.asarray(object_crop(image, Detection("cup", 0.9, (2.0, 1.0, 5.0, 4.0), mask)))
    assert crop.shape == (3, 3, 3)
    assert (crop[:2, :2] == 200).all()  # the object
    assert (crop[2, :] == 0x99).all() and (crop[:, 2] == 0x99).all()  # #999 outside its mask
    whole = np.asarray(object_crop(image, Detection("cup", 0.9, (2.0, 1.0, 5.0, 4.0), mask), background="original"))
    assert (whole == 200).all()
    with pytest.raises(ValueError, match="does not match the image"):
        object_crop(image, Detection("cup", 0.9, (0, 0, 2, 2), mask[:4]))


def test_colour_embeddings_are_template_means(colour_classifier):
    model, tokenizer = colour_classifier.model, colour_classifier.processor.tokenizer
    emb = colour_classifier.color_embeddings("bench")
    assert emb.shape[0] == 10
    with torch.no_grad():
        for k, colour in enumerate(("red", "white")):
            index = colour_classifier.colors.index(colour)
            texts = [t.format(c=colour, object="bench") for t in COLOR_TEMPLATES]
            assert texts[1] == f"a photo of a {colour}-colored bench"
            feats = []
            for text in texts:
                out = model.get_text_features(**tokenizer([text], return_tensors="pt"))
                out = out if isinstance(out, torch.Tensor) else out.pooler_output
                feats.append(torch.nn.functional.normalize(out[0], dim=-1))
            expected = torch.nn.functional.normalize(torch.stack(feats).mean(0), dim=-1)
            assert torch.allclose(emb[index], expected, atol=1e-5)


def test_colour_classification_batches_like_one_by_one(colour_classifier, tiny_clip_dir):
    images = [random_image(k) for k in range(3)]
    dets = [[Detection("cup", 0.9, (0.0, 0.0, 40.0, 30.0)), Detection("cup", 0.8, (10.0, 10.0, 64.0, 64.0))],
            [Detection("dog", 0.9, (5.0, 5.0, 60.0, 50.0))],
            [Detection("cup", 0.7, (0.0, 0.0, 64.0, 64.0))]]
    requests = [(image, d, d[0].label) for image, d in zip(images, dets)]
    together = colour_classifier.classify(requests)
    one = ClipColorClassifier.from_pretrained(str(tiny_clip_dir), "cpu", torch.float32, batch_size=1)
    assert together == [one.classify([r])[0] for r in requests]
    assert [len(a) for a in together] == [2, 1, 1] and all(c in colour_classifier.colors for a in together for c in a)


def test_judge_scores_records_end_to_end(detector_dir, tiny_clip_dir):
    items = {i.category: i for i in geneval_prompts()}
    records = [{"method": "none", "prompt_id": i.id, "judge_metadata": i.metadata} for i in items.values()]
    records.append({"method": "none", "prompt_id": "plain", "judge_metadata": None})
    images = [random_image(k) for k in range(len(records))]
    # Thresholds at 0 so that the random detector's faint detections reach the colour classifier.
    judge = GenEvalJudge(detector=detector_dir, clip_model=str(tiny_clip_dir), device="cpu", batch_size=4,
                         settings=GenEvalSettings(threshold=0.0, counting_threshold=0.0), test_size=SMALL)
    results = judge.score(images, records)
    assert len(results) == 7
    assert results[-1] == {"metrics": {"geneval_correct": None}, "details": {"skipped": results[-1]["details"]["skipped"]}}
    for result, record in zip(results[:-1], records):
        assert set(result) == {"metrics", "details"} and result["metrics"]["geneval_correct"] in (0.0, 1.0)
        details = result["details"]
        assert details["tag"] == record["judge_metadata"]["tag"]
        assert result["metrics"]["geneval_correct"] == float(details["correct"])
        assert details["correct"] == (details["reasons"] == [])
        for boxes in details["objects"].values():
            assert all(len(b) == 5 for b in boxes) and len(boxes) <= 16
    assert any(details["colors"] for details in (r["details"] for r in results[:-1]))
    assert judge.score(images, records) == results  # deterministic
    assert judge.settings()["rules"]["threshold"] == 0.0
    for record, result in zip(records, results):
        record["metrics"] = result["metrics"]
    table = judge.summarize(records)
    assert table["columns"][:2] == ["method", "overall"] and table["columns"][2:8] == list(items)
    row = table["rows"][0]
    task_scores = row[2:8]
    assert row[0] == "none" and row[1] == pytest.approx(np.mean(task_scores)) and row[-1] == 6
    with pytest.raises(ValueError, match="2 images for 7 records"):
        judge.score(images[:2], records)


def test_models_that_cannot_load_are_named_with_the_option_to_pass(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match=r"GenEval's detector '.*empty'.*\(--detector\)"):
        Mask2FormerDetector.from_pretrained(str(tmp_path / "empty"), "cpu", torch.float32)
    with pytest.raises(OSError, match=r"GenEval's colour CLIP '.*empty'.*\(--judge-clip-model\)"):
        ClipColorClassifier.from_pretrained(str(tmp_path / "empty"), "cpu", torch.float32)
