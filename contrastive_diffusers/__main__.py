"""``python -m contrastive_diffusers``: the same as the ``contrastive-diffusers`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
