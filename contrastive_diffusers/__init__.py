"""contrastive-diffusers: make text-to-image diffusion models draw what the prompt says.

Subpackages: ``guidance`` (attention-map guidance methods), ``pipelines`` (guided Stable
Diffusion 1.x / 2.x, SDXL, SD3 / 3.5 and Flux.1 pipelines), ``models`` (the shipped
ShapesWorld model, tiny offline models, loading), ``training``, ``prompts``, ``shapes``
(ShapesWorld), ``eval`` and ``cli`` (see their docstrings; the README's layout section
shows how they stack).
"""

__version__ = "0.1.0"
