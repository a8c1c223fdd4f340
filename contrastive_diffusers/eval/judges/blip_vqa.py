"""P("yes") for yes/no questions about images, with a BLIP VQA model (transformers'
``BlipForQuestionAnswering``), scored as T2I-CompBench's ``vqa_prob`` inference scores it:

1. the image, resized to ``image_size`` (480 there) with bicubic resampling and CLIP's
   normalisation, goes through the ViT;
2. the question, lower-cased with ``.!"()*#:;~`` removed (BLIP's ``pre_question``), is tokenised
   (at most 35 tokens) with its first token replaced by ``[ENC]`` and encoded over the image;
3. the answer decoder reads one ``[DEC]`` token over the question's states; of the softmax over
   the whole vocabulary at that step, ``p(yes) / (p(yes) + p(no))`` is the answer.

transformers' own ``forward`` does not return the decoder's logits and ``generate`` decodes
answers, so the three parts are called directly. Differences from the official code:
the HF checkpoints' position embeddings were converted at 384 px, so at 480 they are interpolated
(``interpolate_pos_encoding``) where the original model carried 480-px embeddings; on CUDA the
model runs in float16 (the official script: float32). The hub's tokenizers lack ``[ENC]``
(transformers' own ``BlipForQuestionAnswering`` starts questions with ``[CLS]``); its row in the
embedding table is found by BLIP's layout (:func:`_question_start`), and a model without that
layout keeps ``[CLS]`` (recorded as ``question_start``).
"""

from __future__ import annotations

import re

import torch

_PRE_QUESTION = re.compile(r"[.!\"()*#:;~]")


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's question clean-up: lower case, ``.!"()*#:;~`` removed, at most ``max_words`` words."""
    question = _PRE_QUESTION.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def _question_start(tokenizer, text_config, enc_id) -> tuple[str, int]:
    """The token that replaces a question's first one: ``[ENC]``. BLIP's own tokenizer is
    bert-base-uncased plus ``[DEC]`` and then ``[ENC]``; the converted checkpoints on the hub
    ship bert-base-uncased alone, but keep the two rows in their embedding table (vocab_size
    30524, ``bos_token_id`` 30522 = ``[DEC]``), so ``[ENC]`` is the row after ``[DEC]``."""
    if enc_id not in (None, tokenizer.unk_token_id):
        return "[ENC]", enc_id
    bos = text_config.bos_token_id
    if bos is not None and text_config.vocab_size == bos + 2 and len(tokenizer) <= bos + 1:
        return "[ENC]", bos + 1
    return tokenizer.cls_token, tokenizer.cls_token_id  # not BLIP's layout: what transformers does


class BlipYesNo:
    """Batched P(yes) of a BLIP VQA model; build it with :meth:`from_pretrained`."""

    def __init__(self, model, processor, device, dtype, batch_size: int = 16, image_size: int | None = 480,
                 name: str | None = None):
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.model = model.to(device, dtype).eval()
        self.processor = processor
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        tokenizer = processor.tokenizer
        ids = {word: tokenizer.convert_tokens_to_ids(word) for word in ("yes", "no", "[ENC]")}
        if ids["yes"] in (None, tokenizer.unk_token_id) or ids["no"] in (None, tokenizer.unk_token_id):
            raise ValueError(f"{self.name}: the tokenizer has no 'yes' or 'no' token; load a BLIP VQA checkpoint "
                             "(e.g. Salesforce/blip-vqa-capfilt-large).")
        self.yes_id, self.no_id = ids["yes"], ids["no"]
        self.question_start, self.question_start_id = _question_start(tokenizer, model.config.text_config, ids["[ENC]"])
        native = model.config.vision_config.image_size
        self.image_size = image_size or native
        self.interpolate = self.image_size != native

    @classmethod
    def from_pretrained(cls, name_or_path, device, dtype, batch_size: int = 16, image_size: int | None = 480):
        from transformers import BlipForQuestionAnswering, BlipProcessor

        try:
            model = BlipForQuestionAnswering.from_pretrained(name_or_path)
            processor = BlipProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise OSError(f"cannot load the BLIP VQA model {name_or_path!r} ({err}); pass a hub id such as "
                          "Salesforce/blip-vqa-capfilt-large or a folder saved with save_pretrained.") from None
        return cls(model, processor, device, dtype, batch_size, image_size, name=str(name_or_path))

    def _p_yes(self, input_ids, image_embeds) -> list[float]:
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question = self.model.text_encoder(input_ids=input_ids, encoder_hidden_states=image_embeds,
                                           encoder_attention_mask=image_mask).last_hidden_state
        start = torch.full((len(input_ids), 1), self.model.config.text_config.bos_token_id, device=self.device)
        logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=question).logits[:, 0].float()
        probs = logits.softmax(dim=-1)
        yes, no = probs[:, self.yes_id], probs[:, self.no_id]
        return (yes / (yes + no)).tolist()

    def settings(self) -> dict:
        return {"vqa_model": self.name, "image_size": self.image_size, "question_start": self.question_start}

    @torch.no_grad()
    def yes_probability(self, images: list, questions: list[list[str]]) -> list[list[float]]:
        """For each image, P(yes) of each of its questions (images in batches of ``batch_size``,
        each image's ViT features computed once for all its questions)."""
        if len(images) != len(questions):
            raise ValueError(f"yes_probability needs one question list per image; got {len(images)} images "
                             f"and {len(questions)} lists.")
        answers = []
        for start in range(0, len(images), self.batch_size):
            answers += self._batch(images[start : start + self.batch_size], questions[start : start + self.batch_size])
        return answers

    def _batch(self, images: list, questions: list[list[str]]) -> list[list[float]]:
        counts = [len(q) for q in questions]
        flat = [pre_question(q) for qs in questions for q in qs]
        if not flat:
            return [[] for _ in images]
        size = {"height": self.image_size, "width": self.image_size}
        pixels = self.processor.image_processor(images, size=size, return_tensors="pt")["pixel_values"]
        vision = self.model.vision_model(pixel_values=pixels.to(self.device, self.dtype),
                                         interpolate_pos_encoding=self.interpolate)
        owner = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(counts)).tolist()
        tokens = self.processor.tokenizer(flat, truncation=True, max_length=35)["input_ids"]
        values = [0.0] * len(flat)
        # Questions of one length at a time, unpadded: transformers 5's BLIP text layers drop the
        # cross-attention mask, so a padded question would read its padding (batch-dependent answers).
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(tokens):
            by_length.setdefault(len(ids), []).append(i)
        for group in by_length.values():
            input_ids = torch.tensor([tokens[i] for i in group], device=self.device)
            input_ids[:, 0] = self.question_start_id
            image_embeds = vision.last_hidden_state[[owner[i] for i in group]]
            for i, p_yes in zip(group, self._p_yes(input_ids, image_embeds)):
                values[i] = p_yes
        out, at = [], 0
        for n in counts:
            out.append(values[at : at + n])
            at += n
        return out
