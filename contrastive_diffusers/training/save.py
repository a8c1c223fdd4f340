"""Learned embeddings in the files stock diffusers loads (``pipe.load_textual_inversion``).

diffusers loads one token per file, as ``{token: tensor}``. Layout written into a folder:

==============================  =====================================================
SD 1.x / 2.x, one token         ``learned_embeds.safetensors``
SD 1.x / 2.x, several tokens    ``learned_embeds-<name>.safetensors`` per token
SDXL, one token                 ``learned_embeds.safetensors`` (first text encoder,
                                CLIP ViT-L) and ``learned_embeds_2.safetensors``
                                (second encoder, OpenCLIP bigG), as diffusers'
                                ``textual_inversion_sdxl.py`` example writes them; and
                                ``learned_embeds_sdxl.safetensors`` holding
                                ``{"clip_l": ..., "clip_g": ...}``, the single-file SDXL
                                format of diffusers' textual-inversion docs
SDXL, several tokens            the same three names with ``-<name>`` per token
every case                      ``learned_embeds.json``: tokens, files, initializers
==============================  =====================================================

``<name>`` is the token made filesystem-safe (``<c1>`` -> ``c1``). Tensors are float32
``(1, width)``. Loading::

    pipe.load_textual_inversion("out/learned_embeds.safetensors")                 # SD, one token
    pipe.load_textual_inversion(["out/learned_embeds-c1.safetensors",
                                 "out/learned_embeds-c2.safetensors"])            # SD, several
    pipe.load_textual_inversion("out/learned_embeds.safetensors",                 # SDXL
                                text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion("out/learned_embeds_2.safetensors",
                                text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)

or :func:`load_learned_embeds` ``(pipe, "out")``, which reads ``learned_embeds.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic_io import atomic_path, write_json_atomic

MANIFEST = "learned_embeds.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_names(tokens: Sequence[str]) -> list[str]:
    """A distinct, filesystem-safe name per token (``<c1>`` -> ``c1``, ``<a/b>`` -> ``a-b``)."""
    names: list[str] = []
    for token in tokens:
        base = _UNSAFE.sub("-", token).strip("-.") or "token"
        name, n = base, 2
        while name.lower() in (x.lower() for x in names):  # also distinct on case-insensitive filesystems
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _save_atomic(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def save_learned_embeds(
    output_dir,
    tokens: Sequence[str],
    rows: Sequence[torch.Tensor],
    initializers: Sequence[str] = (),
) -> list[Path]:
    """Write the learned rows (one ``(len(tokens), width)`` tensor per text encoder: one for
    SD, two for SDXL) in the layout of the module docstring; returns the files written."""
    tokens = list(tokens)
    if len(rows) not in (1, 2):
        raise ValueError(f"Expected rows for one (SD) or two (SDXL) text encoders, got {len(rows)}.")
    for r in rows:
        if r.shape[0] != len(tokens):
            raise ValueError(f"Got {r.shape[0]} rows for {len(tokens)} tokens.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    single = len(tokens) == 1
    names = file_names(tokens)
    written, entries = [], []
    for i, (token, name) in enumerate(zip(tokens, names)):
        suffix = "" if single else f"-{name}"
        files = {}
        first = out / f"learned_embeds{suffix}.safetensors"
        _save_atomic({token: rows[0][i : i + 1]}, first)
        files["text_encoder"] = first.name
        written.append(first)
        if len(rows) == 2:
            second = out / f"learned_embeds_2{suffix}.safetensors"
            _save_atomic({token: rows[1][i : i + 1]}, second)
            both = out / f"learned_embeds_sdxl{suffix}.safetensors"
            _save_atomic({"clip_l": rows[0][i : i + 1], "clip_g": rows[1][i : i + 1]}, both)
            files["text_encoder_2"] = second.name
            files["sdxl_single_file"] = both.name
            written += [second, both]
        entry = {"token": token, "files": files}
        if i < len(initializers):
            entry["initializer_token"] = initializers[i]
        entries.append(entry)
    write_json_atomic(out / MANIFEST, {"format": "diffusers textual inversion", "tokens": entries})
    return written


def load_learned_embeds(pipe, folder) -> list[str]:
    """Load every token of a folder written by :func:`save_learned_embeds` into ``pipe`` with
    stock ``pipe.load_textual_inversion`` (both encoders for SDXL); returns the tokens."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found; is {folder} a training output folder?")
    entries = json.loads(manifest.read_text(encoding="utf-8"))["tokens"]
    first = [str(folder / e["files"]["text_encoder"]) for e in entries]
    pipe.load_textual_inversion(first, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    if getattr(pipe, "text_encoder_2", None) is not None:
        missing = [e["token"] for e in entries if "text_encoder_2" not in e["files"]]
        if missing:
            raise ValueError(
                f"{folder} has no second-encoder files for {', '.join(missing)}; was it trained on SD, not SDXL?"
            )
        second = [str(folder / e["files"]["text_encoder_2"]) for e in entries]
        pipe.load_textual_inversion(second, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    return [e["token"] for e in entries]
