"""The models the package runs: where they come from and how they load.

- :mod:`.names`: the model names besides hub ids and folders (``embedded``, ``tiny-sd1``, ...)
  and the default CLIP of each;
- :mod:`.embedded`: the shipped ShapesWorld pipeline and its CLIP;
- :mod:`.tiny`: tiny random-weight pipelines, CLIP and BLIP models for offline tests and demos
  (:mod:`.tiny_mmdit`: the SD3 / Flux ones; :mod:`.tiny_tokenizers`: their offline tokenizers);
- :mod:`.loading`: :func:`~.loading.load_pipeline` (any of the above, a hub id or a folder, as a
  guided pipeline), devices and dtypes.
"""
