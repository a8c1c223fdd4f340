"""``python -m contrastive_diffusers.shapes.train``: train the ShapesWorld models."""

from .run import main

if __name__ == "__main__":
    raise SystemExit(main())
