"""contrastive-diffusers: make text-to-image diffusion models draw what the prompt says.

Subpackages: ``guidance`` (attention-map guidance methods), ``pipelines`` (guided Stable
Diffusion / SDXL pipelines), ``training`` and ``eval`` (see their docstrings), and
``testing`` (tiny offline pipelines).
"""

__version__ = "0.1.0"
