"""``python -m contrastive_diffusers.shapes.train``: the ShapesWorld models' training command,
as the README and the shipped model card name it. The trainer lives in
:mod:`contrastive_diffusers.training.world_model` (it uses the training package), so that this
package, the world itself, imports nothing from training; only this entry module points up.
"""

from __future__ import annotations

from ..training.world_model.run import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
