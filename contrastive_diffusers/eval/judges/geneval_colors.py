"""GenEval's colour classifier: zero-shot CLIP over each object's masked and boxed crop.

As ``evaluate_images.py`` does it (``ImageCrops`` and ``color_classification``): the image
outside the object's mask is replaced by a flat grey (``#999``), the result is cropped to the
object's box, and CLIP picks one of GenEval's ten colours. Each colour's text embedding is
clip_benchmark's ``zero_shot_classifier``: the mean of the normalised embeddings of three
templates ("a photo of a {c} {object}", "a photo of a {c}-colored {object}", "a photo of a
{c} object"), normalised again; the answer is the colour of largest cosine similarity.

GenEval runs open_clip's ``ViT-L-14`` with OpenAI's weights; transformers' CLIPModel loads the
same weights as ``openai/clip-vit-large-patch14`` (the default). Its CLIPImageProcessor does
what open_clip's transform does (short side to 224 bicubic, centre crop 224, OpenAI mean/std)
with its own resize code, so pixel values may differ in the last bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..._compat import clip_features
from ...prompts.geneval import GENEVAL_COLORS
from .geneval_rules import Detection

__all__ = ["COLOR_TEMPLATES", "DEFAULT_CLIP", "ClipColorClassifier", "object_crop"]

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
#: GenEval's three templates; ``{c}`` is the colour, ``{object}`` the class name.
COLOR_TEMPLATES = ("a photo of a {c} {object}", "a photo of a {c}-colored {object}", "a photo of a {c} object")


def object_crop(image: Image.Image, det: Detection, background: str = "#999", crop: bool = True) -> Image.Image:
    """The picture CLIP sees for one object: outside its mask ``background`` (``"original"``:
    the image itself), cut to its box (PIL rounds the box, as in GenEval)."""
    image = image.convert("RGB")
    if det.mask is not None:
        if tuple(det.mask.shape) != (image.height, image.width):
            raise ValueError(f"object mask of shape {tuple(det.mask.shape)} does not match the image "
                             f"({image.height}, {image.width}).")
        blank = image.copy() if background == "original" else Image.new("RGB", image.size, color=background)
        image = Image.composite(image, blank, Image.fromarray(det.mask.astype(bool)))
    return image.crop(tuple(det.box[:4])) if crop else image


class ClipColorClassifier:
    """``classify(requests)``: for each ``(image, objects, classname)``, one colour per object."""

    def __init__(self, model, processor, device, dtype, batch_size: int = 16,
                 colors: Sequence[str] = GENEVAL_COLORS, background: str = "#999", crop: bool = True):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size
        self.colors, self.background, self.crop = tuple(colors), background, crop
        self._text: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str, device, dtype, **kwargs) -> ClipColorClassifier:
        from transformers import CLIPModel, CLIPProcessor

        try:
            model, processor = CLIPModel.from_pretrained(name_or_path), CLIPProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise OSError(f"cannot load GenEval's colour CLIP {name_or_path!r} ({err}); pass a CLIP hub id such as "
                          f"{DEFAULT_CLIP} or a folder saved with save_pretrained (--judge-clip-model).") from None
        return cls(model, processor, device, dtype, **kwargs)

    @torch.no_grad()
    def color_embeddings(self, classname: str) -> torch.Tensor:
        """``(colours, dim)``: each colour's template-averaged text embedding for ``classname``."""
        if classname not in self._text:
            texts = [t.format(c=c, object=classname) for c in self.colors for t in COLOR_TEMPLATES]
            tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            features = clip_features(self.model.get_text_features(**tokens)).float()
            features = torch.nn.functional.normalize(features, dim=-1).view(len(self.colors), len(COLOR_TEMPLATES), -1)
            self._text[classname] = torch.nn.functional.normalize(features.mean(dim=1), dim=-1)
        return self._text[classname]

    @torch.no_grad()
    def image_embeddings(self, crops: list[Image.Image]) -> torch.Tensor:
        out = []
        for start in range(0, len(crops), self.batch_size):
            pixels = self.processor(images=crops[start:start + self.batch_size], return_tensors="pt")["pixel_values"]
            features = clip_features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            out.append(torch.nn.functional.normalize(features.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0)

    def classify(self, requests: Sequence[tuple[Image.Image, Sequence[Detection], str]]) -> list[list[str]]:
        """All requests' crops go through CLIP in batches of ``batch_size``."""
        crops = [object_crop(image, det, self.background, self.crop) for image, dets, _ in requests for det in dets]
        if not crops:
            return [[] for _ in requests]
        features = self.image_embeddings(crops)
        answers, start = [], 0
        for _, dets, classname in requests:
            logits = features[start:start + len(dets)] @ self.color_embeddings(classname).T
            answers.append([self.colors[int(k)] for k in logits.argmax(dim=1)])
            start += len(dets)
        return answers
