"""Image captions with BLIP, for the Attend-and-Excite "text-text similarity" metric.

The Attend-and-Excite protocol captions each generated image with BLIP and reports the CLIP
similarity between the prompt and the caption; with a :class:`~.clip_score.ClipScorer`::

    captioner = Captioner.from_pretrained("Salesforce/blip-image-captioning-base")
    captions = captioner.caption(images)
    similarity = scorer.text_similarity(prompts, captions, ensemble_a=True)

:class:`Captioner` loads any BLIP captioning checkpoint (hub id or local folder) with
transformers' ``BlipForConditionalGeneration`` and ``BlipProcessor``; BLIP base, COCO
captioning (``Salesforce/blip-image-captioning-base``), is the model Attend-and-Excite used.
transformers is already a dependency of this package, so nothing more needs installing: the
captioner is optional only in that nothing loads a BLIP model until one is named.

Captions are unconditional (no text prefix) and deterministic: greedy decoding by default,
beam search with ``num_beams > 1``; a batch gives the same captions as one image at a time.
The Attend-and-Excite code ran that model through LAVIS (``blip_caption`` / ``base_coco``),
which prefixes "a picture of " (stripping it from the caption) and decodes with 3 beams and
``min_length=10``, ``max_length=30``; numbers from this captioner's defaults are therefore not
directly comparable with the paper's.

Images may be given in every form :func:`~.clip_score.to_pil_images` accepts; all are
converted to the same 8-bit RGB images first, so every form of one picture gets one caption.
"""

from __future__ import annotations

import torch

from .clip_score import to_pil_images


class Captioner:
    """Captions images with a BLIP captioning model. Build it with :meth:`from_pretrained`."""

    def __init__(
        self,
        model,
        processor,
        device=None,
        dtype=None,
        batch_size: int = 16,
        max_new_tokens: int = 30,
        num_beams: int = 1,
    ):
        # What records say captioned them: the hub id or folder, else the model's own record of it.
        self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        if batch_size < 1 or max_new_tokens < 1 or num_beams < 1:
            raise ValueError(
                f"batch_size, max_new_tokens and num_beams must be positive; got {batch_size}, "
                f"{max_new_tokens} and {num_beams}."
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(self.device, self.dtype).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        device=None,
        dtype=None,
        batch_size: int = 16,
        max_new_tokens: int = 30,
        num_beams: int = 1,
    ) -> "Captioner":
        """Load a BLIP captioning checkpoint (hub id or local folder) with its processor.

        ``max_new_tokens`` caps a caption's length; ``num_beams=1`` decodes greedily."""
        from huggingface_hub.errors import HFValidationError
        from transformers import BlipForConditionalGeneration, BlipProcessor

        try:
            model = BlipForConditionalGeneration.from_pretrained(name_or_path)
            processor = BlipProcessor.from_pretrained(name_or_path)
        except (OSError, HFValidationError) as err:
            raise OSError(
                f"Could not load a BLIP captioning model from {str(name_or_path)!r}: pass a hub id (e.g. "
                f"'Salesforce/blip-image-captioning-base') or a folder with config.json, weights and the "
                f"processor files. ({err})"
            ) from err
        captioner = cls(
            model,
            processor,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
        )
        captioner.name = str(name_or_path)
        return captioner

    @torch.no_grad()
    def caption(self, images) -> list[str]:
        """One caption per image, stripped of special tokens and surrounding spaces."""
        pil = to_pil_images(images)
        captions = []
        for start in range(0, len(pil), self.batch_size):
            pixels = self.processor(images=pil[start : start + self.batch_size], return_tensors="pt")["pixel_values"]
            ids = self.model.generate(
                pixel_values=pixels.to(self.device, self.dtype),
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
            )
            captions.extend(text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True))
        return captions
