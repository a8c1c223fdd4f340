"""Loading the pipelines the CLI and the benchmark runner work with.

``load_pipeline(model, device, dtype)`` returns a guided pipeline for the shipped ShapesWorld
model (``embedded``, the default), a tiny offline model kind with random weights
(``tiny-sd1`` / ``tiny-sd2`` / ``tiny-sdxl`` / ``tiny-sd3`` / ``tiny-sd35`` / ``tiny-flux`` /
``tiny-flux-schnell``), a hub id or a local folder. A folder's pipeline class is the one its
``model_index.json`` names (diffusers' ``DiffusionPipeline.from_pretrained`` picks it), and
:data:`GUIDED_CLASSES` says which guided pipeline wraps it. Problems
the user can fix (missing folder, unloadable model, unsupported pipeline, absent device)
raise :class:`LoadError` with the fix in the message.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager

from .._compat import dtype_kwarg
from .names import EMBEDDED_MMDIT_MODEL, EMBEDDED_MODEL, TINY_MODELS


#: The device names the loaders take (torch's, plus "auto": CUDA when present, else the CPU).
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class LoadError(ValueError):
    """A model or device the user named cannot be used; the message says why and what to do."""


def resolve_device(name: str) -> str:
    import torch

    if not DEVICE_PATTERN.match(name):
        raise LoadError(f"device {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LoadError(f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use device 'cpu'")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise LoadError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LoadError("device 'mps': MPS is not available here; use device 'cpu'")
    return name


def resolve_dtype(name: str | None, device: str):
    """(torch dtype, its name); half precision by default only on CUDA, where it is fast and safe."""
    import torch

    name = name or ("float16" if device.startswith("cuda") else "float32")
    return getattr(torch, name), name


def looks_like_folder(model: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else is meant as a folder.
    return os.path.isabs(model) or model.startswith((".", "~")) or "\\" in model or model.count("/") > 1


@contextmanager
def _diffusers_errors_only():
    """Silence diffusers' warnings for a moment: ``from_pipe`` casts every model, and each cast
    warns about "modules that should be kept in float32: []" even when there are none."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


@contextmanager
def _no_progress_bars(quiet: bool):
    """diffusers' and transformers' loading bars off for a moment when ``quiet``."""
    if not quiet:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    shown = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in shown:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in shown:
            lib.enable_progress_bar()


def load_pretrained(model: str, dtype):
    """A stock diffusers pipeline from the hub or a folder; LoadError when it cannot be found."""
    from diffusers import DiffusionPipeline

    folder = os.path.expanduser(model)
    if looks_like_folder(model) and not os.path.isdir(folder):
        raise LoadError(f"model folder {model!r} does not exist")
    source = folder if os.path.isdir(folder) else model
    try:
        return DiffusionPipeline.from_pretrained(source, **dtype_kwarg(dtype))
    except (OSError, ValueError) as err:  # missing files, unknown or malformed hub id
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LoadError(f"cannot load model {model!r}: {first_line}") from None


#: Stock diffusers pipeline class -> the guided pipeline of :mod:`contrastive_diffusers.pipelines`
#: that wraps it (matched with ``isinstance``, so a guided pipeline maps to its own class). A
#: guided class this version's :mod:`~contrastive_diffusers.pipelines` lacks makes
#: :func:`to_guided` raise a :class:`LoadError` listing the supported ones.
GUIDED_CLASSES = (
    ("StableDiffusionXLPipeline", "GuidedStableDiffusionXLPipeline"),
    ("StableDiffusionPipeline", "GuidedStableDiffusionPipeline"),
    ("StableDiffusion3Pipeline", "GuidedStableDiffusion3Pipeline"),
    ("FluxPipeline", "GuidedFluxPipeline"),
)


def guided_class_name(pipe) -> str | None:
    """The name of the guided pipeline class for ``pipe`` (see :data:`GUIDED_CLASSES`), or None."""
    import diffusers

    for stock_name, guided_name in GUIDED_CLASSES:
        if isinstance(pipe, getattr(diffusers, stock_name)):
            return guided_name
    return None


def to_guided(pipe, dtype):
    """The guided pipeline sharing ``pipe``'s components, in ``dtype``."""
    from .. import pipelines

    guided_name = guided_class_name(pipe)
    guided_class = getattr(pipelines, guided_name, None) if guided_name else None
    if guided_class is None:
        available = [stock for stock, guided in GUIDED_CLASSES if hasattr(pipelines, guided)]
        raise LoadError(
            f"the model loads as {type(pipe).__name__}; this version's guided pipelines support "
            f"{', '.join(available)} models"
        )
    # The dtype must be passed: without it diffusers 0.42's from_pipe casts everything to float32.
    with _diffusers_errors_only():
        return guided_class.from_pipe(pipe, **dtype_kwarg(dtype))


def load_pipeline(model: str, device: str, dtype, quiet: bool, loading_bars: bool | None = None):
    """The guided pipeline for ``model`` (``embedded``, a tiny kind, a hub id or a folder) on
    ``device``; ``quiet``: no denoising progress bars; ``loading_bars`` (default: ``not quiet``):
    diffusers' and transformers' bars while it loads."""
    hide_loading = quiet if loading_bars is None else not loading_bars
    from .embedded import embedded_mmdit_dir, embedded_model_dir

    if model in (EMBEDDED_MODEL, EMBEDDED_MMDIT_MODEL):
        try:
            folder = embedded_model_dir() if model == EMBEDDED_MODEL else embedded_mmdit_dir()
        except FileNotFoundError as err:
            raise LoadError(str(err)) from None
        with _no_progress_bars(hide_loading):
            stock = load_pretrained(str(folder), dtype)
    elif model in TINY_MODELS:
        from .tiny import tiny_pipeline

        stock = tiny_pipeline(TINY_MODELS[model])  # float32; to_guided casts it
    else:
        with _no_progress_bars(hide_loading):
            stock = load_pretrained(model, dtype)
    # Cast before moving, so a half-precision model never sits on the device in float32.
    pipe = to_guided(stock, dtype).to(device)
    pipe.set_progress_bar_config(disable=quiet)
    return pipe


def is_sdxl(pipe) -> bool:
    from diffusers import StableDiffusionXLPipeline

    return isinstance(pipe, StableDiffusionXLPipeline)


def is_flux(pipe) -> bool:
    from diffusers import FluxPipeline

    return isinstance(pipe, FluxPipeline)


def grid_cell(pipe) -> int:
    """Pixels per cell of the latent (UNet) or patch (MMDiT) grid: the VAE's downsampling,
    times the transformer's patch on SD3 and the 2x2 packing on Flux."""
    if is_flux(pipe):
        return pipe.vae_scale_factor * 2
    if hasattr(pipe, "transformer"):
        return pipe.vae_scale_factor * pipe.transformer.config.patch_size
    return pipe.vae_scale_factor


def size_multiple(pipe) -> int:
    """What height and width must be multiples of: a whole grid cell (Flux's pipeline would
    otherwise resize the image with a warning, not refuse), and 8 on SD and SDXL, whose
    pipelines refuse other sizes whatever the VAE (the embedded model's downsamples by 2)."""
    cell = grid_cell(pipe)
    return cell if hasattr(pipe, "transformer") else math.lcm(cell, 8)


def map_grid(pipe, height: int, width: int) -> tuple[int, int]:
    """The latent (UNet) or patch grid (MMDiT) of an image of ``height`` x ``width``."""
    side = grid_cell(pipe)
    return height // side, width // side


def default_size(pipe) -> tuple[int, int]:
    """The model's native (height, width): the pipeline's own default, as its ``__call__`` would
    pick, except for Flux, whose pipeline defaults to 1024 px whatever the model; there the
    VAE's ``sample_size`` (1024 on FLUX.1, 128 on the tiny Flux) says the model's size."""
    if is_flux(pipe):
        side = pipe.vae.config.sample_size
    elif is_sdxl(pipe) or hasattr(pipe, "transformer"):  # SDXL, SD3: default_sample_size in latents
        side = pipe.default_sample_size * pipe.vae_scale_factor
    else:
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side
