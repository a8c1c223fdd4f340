"""GenEval's object detector on transformers: Mask2Former instance segmentation, read out as
mmdetection 2.x reads it in GenEval's ``evaluate_images.py``.

GenEval runs mmdet's ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` checkpoint. transformers
cannot load mmdet checkpoints, so the default here is the same architecture and recipe trained
by the Mask2Former authors (Swin-S, 100 queries, COCO instance, LSJ, 50 epochs):
``facebook/mask2former-swin-small-coco-instance``. What follows mmdet (the read-out is
hand-written because transformers' ``post_process_instance_segmentation`` scores masks on a
fixed 384x384 grid, upsamples the binary masks by nearest neighbour and gives no boxes):

- input: resized so the short side is 800 and the long side at most 1333 (mmdet's test
  ``Resize``), ImageNet mean/std, padded with zeros to a multiple of 32;
- mask logits upsampled bilinearly to the padded input, the padding cropped off, upsampled
  bilinearly to the original image size;
- the 100 best (query, class) pairs of the softmax class scores (no-object dropped); a mask is
  its logits > 0, its score the class probability times the mean sigmoid inside the mask, its
  box the mask's tight box ``(x0, y0, x_last + 1, y_last + 1)`` (mmdet's ``mask2bbox``).

Differences that remain: the weights (a different training run of the same model), the
resize's interpolation (PIL bilinear here, OpenCV bilinear in mmdet) and float16 on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from ...prompts.geneval import GENEVAL_OBJECTS
from .geneval_rules import Detection

__all__ = ["DEFAULT_DETECTOR", "COCO_ALIASES", "Mask2FormerDetector", "detector_classes", "mask_boxes"]

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
#: COCO's own names for the three classes GenEval renames.
COCO_ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}


def detector_classes(id2label: dict) -> list[str | None]:
    """The GenEval class of each detector label id (``None``: a label GenEval does not use,
    e.g. a panoptic model's stuff classes); a ValueError when a GenEval class is missing."""
    size = max(int(k) for k in id2label) + 1 if id2label else 0
    classes: list[str | None] = [None] * size
    for key, name in id2label.items():
        name = str(name).strip().lower()
        name = COCO_ALIASES.get(name, name)
        classes[int(key)] = name if name in GENEVAL_OBJECTS else None
    missing = [c for c in GENEVAL_OBJECTS if c not in classes]
    if missing:
        raise ValueError(
            f"the detector's labels (config.id2label) lack {len(missing)} of GenEval's 80 COCO classes "
            f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}); pass a COCO-trained "
            f"Mask2Former, e.g. {DEFAULT_DETECTOR}."
        )
    return classes


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(x0, y0, x1, y1)`` of boolean masks ``(N, H, W)``, end-exclusive; an empty
    mask gives zeros (mmdet's ``mask2bbox``)."""
    n, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~cols.any(dim=1)] = 0
    return boxes


class Mask2FormerDetector:
    """Detections per image (:class:`~.geneval_rules.Detection` with masks), from a
    ``Mask2FormerForUniversalSegmentation`` and its image processor.

    ``test_size``: (short side, long side limit) of the resized input; ``max_per_image``: how
    many (query, class) pairs are read out; ``min_score``: detections at or below it are
    dropped at once (GenEval's lowest threshold, 0.3, loses nothing and saves memory)."""

    def __init__(self, model, processor, device, dtype, batch_size: int = 16, test_size=(800, 1333),
                 max_per_image: int = 100, min_score: float = 0.0):
        if len(test_size) != 2 or not 0 < test_size[0] <= test_size[1]:
            raise ValueError(f"test_size must be (short side, long side limit) with 0 < short <= long; got {test_size!r}.")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.classes = detector_classes(model.config.id2label)
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size
        self.test_size, self.max_per_image, self.min_score = tuple(test_size), max_per_image, min_score

    @classmethod
    def from_pretrained(cls, name_or_path: str, device, dtype, **kwargs) -> Mask2FormerDetector:
        try:  # transformers' Mask2Former module imports scipy (for its training loss) on first use
            from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

            model = Mask2FormerForUniversalSegmentation.from_pretrained(name_or_path)
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except ImportError as err:
            if "scipy" not in str(err):
                raise
            raise ImportError("GenEval's detector (transformers' Mask2Former) needs scipy: pip install scipy, or "
                              "pip install 'contrastive-diffusers[judges]'.") from None
        except (OSError, ValueError) as err:
            raise OSError(f"cannot load GenEval's detector {name_or_path!r} ({err}); pass a COCO Mask2Former hub id "
                          f"such as {DEFAULT_DETECTOR} or a folder saved with save_pretrained (--detector).") from None
        return cls(model, processor, device, dtype, **kwargs)

    @torch.no_grad()
    def __call__(self, images: list) -> list[list[Detection]]:
        # Batches hold images of one size: padding to a larger neighbour would change the
        # backbone's features (it sees no padding mask), and GenEval detects one image at a time.
        images = [im.convert("RGB") for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, image in enumerate(images):
            by_size.setdefault(image.size, []).append(k)
        out: list[list[Detection]] = [[] for _ in images]
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for k, found in zip(chunk, self._detect_batch([images[k] for k in chunk])):
                    out[k] = found
        return out

    def _detect_batch(self, images: list) -> list[list[Detection]]:
        short, long = self.test_size
        # size_divisor=0: transformers would stretch the image to a multiple of 32; mmdet pads.
        inputs = self.processor(images=images, size={"shortest_edge": short, "longest_edge": long},
                                size_divisor=0, return_tensors="pt")
        pixel_values, pixel_mask = inputs["pixel_values"], inputs["pixel_mask"]
        h, w = pixel_values.shape[-2:]
        pad = (0, -w % 32, 0, -h % 32)  # zeros after normalisation, as mmdet's Pad
        pixel_values = torch.nn.functional.pad(pixel_values, pad).to(self.device, self.dtype)
        pixel_mask = torch.nn.functional.pad(pixel_mask, pad).to(self.device)
        outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        results = []
        for i, image in enumerate(images):
            valid = pixel_mask[i].bool()
            resized = (int(valid.any(dim=1).sum()), int(valid.any(dim=0).sum()))
            results.append(self._read_out(
                outputs.class_queries_logits[i].float(), outputs.masks_queries_logits[i].float(),
                tuple(pixel_values.shape[-2:]), resized, (image.height, image.width),
            ))
        return results

    def _read_out(self, class_logits, mask_logits, padded, resized, original) -> list[Detection]:
        num_classes = class_logits.shape[-1] - 1
        scores = class_logits.softmax(dim=-1)[:, :-1].flatten()
        top_scores, top = scores.topk(min(self.max_per_image, scores.numel()), sorted=False)
        labels, queries = top % num_classes, top // num_classes
        # Only the chosen queries' masks are upsampled (interpolation is per channel).
        logits = torch.nn.functional.interpolate(mask_logits[queries][None], size=padded, mode="bilinear",
                                                 align_corners=False)
        logits = logits[..., : resized[0], : resized[1]]
        logits = torch.nn.functional.interpolate(logits, size=original, mode="bilinear", align_corners=False)[0]
        masks = logits > 0
        mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
        final = top_scores * mask_scores
        known = torch.tensor([c is not None for c in self.classes], device=labels.device)
        keep = (known[labels] & (final > self.min_score)).nonzero().flatten()
        boxes, scores = mask_boxes(masks[keep]).tolist(), final[keep].tolist()
        names = [self.classes[k] for k in labels[keep].tolist()]
        kept_masks = masks[keep].cpu().numpy()
        return [Detection(name, score, tuple(box), np.ascontiguousarray(mask))
                for name, score, box, mask in zip(names, scores, boxes, kept_masks)]
