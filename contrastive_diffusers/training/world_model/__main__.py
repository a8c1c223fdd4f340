"""``python -m contrastive_diffusers.training.world_model``: train the ShapesWorld models."""

from .run import main

if __name__ == "__main__":
    raise SystemExit(main())
