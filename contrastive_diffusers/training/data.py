"""Captioned image folders for prompt learning, validated before any model is loaded.

Two layouts are read (one per folder):

``metadata.jsonl`` (diffusers / 🤗 datasets imagefolder)
    one JSON object per line, ``{"file_name": "1.png", "text": "a photo of <R>"}``; ``text``
    may also be a list of captions (one is drawn per use).
``text.json`` (ReVersion)
    one JSON object mapping each image file name to a list of templates containing ``{}``,
    e.g. ``{"1.jpg": ["cat {} basket", "a cat {} a basket"]}``.

A folder of images with neither file is accepted only by a method that supplies default
templates (plain textual inversion). In every caption ``{}`` stands for the placeholder token
(only allowed when a single token is learned); placeholder tokens may also be written out.
Every caption must contain a learned token, and every learned token must occur in some
caption. Nothing is unpickled: captions are JSON, images are opened with PIL.

Data order is a pure function of the seed and the step (:class:`DataStream`), and so is every
per-example random choice (crop, flip, caption), which makes resumed runs and multi-process
runs see exactly the examples an uninterrupted single-process run sees.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
METADATA_FILE = "metadata.jsonl"
REVERSION_FILE = "text.json"


class DataError(ValueError):
    """A problem with the training data folder; the message names the file and the fix."""


@dataclass(frozen=True)
class Example:
    """One training image and its candidate captions (one is drawn per use)."""

    path: Path
    captions: tuple[str, ...]


def mix_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for independent streams."""
    return int(
        np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, np.uint64)[0] >> 1
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def open_rgb(path: Path):
    """The image at ``path`` as it is displayed, in RGB: turned by its EXIF orientation (phone
    photos store it sideways, as diffusers' ``load_image`` and DreamBooth's script read them) and
    16-bit greyscale scaled to 8 bits (PIL's ``convert`` would clip it to white)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
            levels = np.asarray(image, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
            image = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))  # 2-D uint8: mode L
        return image.convert("RGB")


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
        open_rgb(path).load()  # verify() leaves the file unusable; decode for real
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"Cannot read the image {path}: {err}. Replace or remove the file.") from err


def _caption_list(value, where: str) -> tuple[str, ...]:
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise DataError(f"{where}: expected a non-empty caption string or a list of them, got {value!r}.")
    return tuple(c.strip() for c in captions)


def jsonl_rows(path: Path):
    """``(line number, where, value)`` of each non-blank line of a JSON Lines file; ``where`` is
    "<path>, line N" for error messages. A line that is not JSON raises :class:`DataError`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err.msg}); each line must be one JSON object.") from None
        yield number, where, value


def _read_metadata(folder: Path) -> dict[str, tuple[str, ...]]:
    path = folder / METADATA_FILE
    entries: dict[str, tuple[str, ...]] = {}
    for _, where, record in jsonl_rows(path):
        if not isinstance(record, dict) or "file_name" not in record or "text" not in record:
            raise DataError(
                f'{where}: each line needs "file_name" and "text", e.g. {{"file_name": "1.png", "text": "a photo of {{}}"}}.'
            )
        name = record["file_name"]
        if not isinstance(name, str) or name in entries:
            raise DataError(f"{where}: file_name {name!r} is not a string or is listed twice.")
        entries[name] = _caption_list(record["text"], where)
    return entries


def _read_reversion(folder: Path) -> dict[str, tuple[str, ...]]:
    path = folder / REVERSION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg}).") from None
    if not isinstance(data, dict) or not data:
        raise DataError(
            f'{path} must be a JSON object mapping image file names to template lists, e.g. {{"1.jpg": ["cat {{}} basket"]}}.'
        )
    entries = {}
    for name, templates in data.items():
        captions = _caption_list(templates, f"{path}, entry {name!r}")
        for caption in captions:
            if "{}" not in caption:
                raise DataError(
                    f"{path}, entry {name!r}: the template {caption!r} has no '{{}}' for the relation token; "
                    "write it as e.g. 'cat {} basket'."
                )
        entries[name] = captions
    return entries


def _why_not_read(folder: Path, name: str) -> str:
    """Why a file the captions name is not among the training images, and the fix."""
    path = folder / name
    if len(Path(name).parts) > 1:
        return (f"only images directly in {folder} are read, not sub-folders; move the images there and "
                "name them without a folder.")
    if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
        return (f"{path.suffix or 'no extension'} is not a format read for training ({', '.join(IMAGE_EXTENSIONS)}); "
                "convert the image to PNG.")
    return f"not found among the images in {folder}; fix the names or add the images."


def load_examples(train_data_dir, default_templates: Sequence[str] | None = None) -> list[Example]:
    """Read and validate a training folder (see the module docstring); every image is decoded once."""
    folder = Path(train_data_dir)
    if not folder.exists():
        raise DataError(f"The training data folder {folder} does not exist; pass an existing --train_data_dir.")
    if not folder.is_dir():
        raise DataError(f"--train_data_dir {folder} is a file; pass the folder that holds the images.")
    images = _image_files(folder)
    if not images:
        raise DataError(
            f"No images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}); put the training images "
            "directly in that folder."
        )
    has_meta, has_reversion = (folder / METADATA_FILE).exists(), (folder / REVERSION_FILE).exists()
    if has_meta and has_reversion:
        raise DataError(f"{folder} has both {METADATA_FILE} and {REVERSION_FILE}; keep the one you mean.")
    if has_meta or has_reversion:
        entries = _read_metadata(folder) if has_meta else _read_reversion(folder)
        source = METADATA_FILE if has_meta else REVERSION_FILE
        by_name = {p.name: p for p in images}
        missing = [name for name in entries if name not in by_name]
        if missing:
            raise DataError(f"{folder / source} lists {', '.join(missing[:5])}: {_why_not_read(folder, missing[0])}")
        unlisted = [p.name for p in images if p.name not in entries]
        if unlisted:
            raise DataError(
                f"{', '.join(unlisted[:5])} in {folder} have no caption in {source}; add an entry for each "
                "image or move the image out of the folder."
            )
        examples = [Example(by_name[name], captions) for name, captions in entries.items()]
    elif default_templates:
        examples = [Example(p, tuple(default_templates)) for p in images]
    else:
        raise DataError(
            f'{folder} has no captions: add {METADATA_FILE} (lines of {{"file_name": ..., "text": ...}}) or a '
            f'ReVersion {REVERSION_FILE} ({{"image.jpg": ["template with {{}}", ...]}}).'
        )
    for example in examples:
        _check_image(example.path)
    return examples


def fill_placeholders(examples: list[Example], placeholder_tokens: Sequence[str]) -> list[Example]:
    """Replace ``{}`` by the placeholder token and check every caption has a learned token and
    every token a caption."""
    tokens = list(placeholder_tokens)
    out = []
    for example in examples:
        captions = []
        for caption in example.captions:
            if "{}" in caption:
                if len(tokens) != 1:
                    raise DataError(
                        f"The caption {caption!r} of {example.path.name} uses '{{}}', which is ambiguous with "
                        f"{len(tokens)} placeholder tokens; write the tokens ({', '.join(tokens)}) into the caption."
                    )
                caption = caption.replace("{}", tokens[0])
            if not _tokens_in(caption, tokens):
                raise DataError(
                    f"The caption {caption!r} of {example.path.name} contains no learned token "
                    f"({', '.join(tokens)}), so it would train nothing; add '{{}}' or a token to it."
                )
            captions.append(caption)
        out.append(Example(example.path, tuple(captions)))
    used = {t for e in out for c in e.captions for t in _tokens_in(c, tokens)}
    unused = [t for t in tokens if t not in used]
    if unused:
        raise DataError(f"The placeholder token(s) {', '.join(unused)} occur in no caption, so they would never train.")
    return out


def _tokens_in(caption: str, tokens) -> set[str]:
    """The placeholder tokens a caption holds, matched longest first as the tokenizer matches
    added tokens: "<c10>" does not also count as "<c1>"."""
    found = set()
    for token in sorted(tokens, key=len, reverse=True):
        if token in caption:
            found.add(token)
            caption = caption.replace(token, " ")
    return found


def open_short_side(path: Path, resolution: int):
    """The RGB image at ``path``, and a copy resized (bicubic) so its short side is ``resolution``."""
    from PIL import Image

    image = open_rgb(path)
    scale = resolution / min(image.width, image.height)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    return image, image.resize(size, resample=Image.BICUBIC)


def open_squashed(path: Path, resolution: int, center: bool):
    """``(original, resized, (top, left))``: the RGB image at ``path``, a copy resized (bicubic)
    to ``resolution`` x ``resolution`` whatever its aspect (``center``: its centre square
    first), and where that square began, in pixels of the image scaled to its short side (as
    SDXL's crop conditioning counts them)."""
    from PIL import Image

    image = open_rgb(path)
    square, origin = image, (0, 0)
    if center:
        side = min(image.width, image.height)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        origin = (round(top * resolution / side), round(left * resolution / side))
    return image, square.resize((resolution, resolution), resample=Image.BICUBIC), origin


def crop_origin(image, resolution: int, center: bool, rng: random.Random) -> tuple[int, int]:
    """``(left, top)`` of a ``resolution`` square crop: centred, or drawn from ``rng`` (x, then y)."""
    free_x, free_y = image.width - resolution, image.height - resolution
    if center:
        return free_x // 2, free_y // 2
    return rng.randint(0, free_x), rng.randint(0, free_y)


def to_pixels(image) -> torch.Tensor:
    """A PIL RGB image as a ``(3, H, W)`` float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DataStream:
    """Which example each batch slot sees: an endless stream of per-epoch permutations.

    Stream position ``p`` holds example ``perm_e[p % n]`` with ``e = p // n`` and ``perm_e``
    a permutation seeded by ``(seed, e)``. Micro-step ``k`` of process ``r`` (of ``w``) with
    per-process batch ``b`` reads positions ``(k*w + r)*b ... + b - 1``, so ``w`` processes
    with batch ``b`` read the same examples as one process with batch ``w*b``.
    """

    def __init__(self, num_examples: int, seed: int):
        if num_examples < 1:
            raise ValueError("A data stream needs at least one example.")
        self.num_examples = num_examples
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
            self._perms = {epoch: torch.randperm(self.num_examples, generator=generator).tolist()}
        return self._perms[epoch]

    def example_at(self, position: int) -> int:
        return self._perm(position // self.num_examples)[position % self.num_examples]

    def positions(self, micro_step: int, batch_size: int, num_processes: int = 1, process_index: int = 0) -> list[int]:
        start = (micro_step * num_processes + process_index) * batch_size
        return list(range(start, start + batch_size))


class ImageCaptions:
    """Loads one example for a stream position: crop, flip and caption drawn with a generator
    seeded by ``(seed, position)``."""

    def __init__(self, examples: list[Example], resolution: int, center_crop: bool = False, flip_p: float = 0.0,
                 squash: bool = False):
        if not examples:
            raise ValueError("No examples.")
        if resolution < 8 or resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {resolution}.")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"--flip_p must be in [0, 1], got {flip_p}.")
        self.examples = examples
        self.resolution = resolution
        self.center_crop = center_crop
        self.flip_p = flip_p
        self.squash = squash  # --image_fit squash

    def __len__(self) -> int:
        return len(self.examples)

    def load(self, index: int, seed: int, position: int) -> dict:
        from PIL import Image

        rng = random.Random(mix_seed(seed, position, 0xDA7A))
        example = self.examples[index]
        caption = example.captions[rng.randrange(len(example.captions))]
        if self.squash:
            original, image, (top, left) = open_squashed(example.path, self.resolution, self.center_crop)
        else:
            original, image = open_short_side(example.path, self.resolution)
            left, top = crop_origin(image, self.resolution, self.center_crop, rng)
            image = image.crop((left, top, left + self.resolution, top + self.resolution))
        original_size = (original.height, original.width)
        if rng.random() < self.flip_p:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return {
            "pixel_values": to_pixels(image),
            "caption": caption,
            "original_size": original_size,
            "crop_top_left": (top, left),
            "index": index,
            "position": position,
        }

    def batch(self, stream: DataStream, positions: list[int], seed: int) -> dict:
        items = [self.load(stream.example_at(p), seed, p) for p in positions]
        return {
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "captions": [item["caption"] for item in items],
            "original_sizes": [item["original_size"] for item in items],
            "crop_top_lefts": [item["crop_top_left"] for item in items],
            "positions": positions,
        }
