"""CLIP-based scoring and compositional benchmarks.

Not implemented yet: this subpackage is reserved for the evaluation tools and has no
public API in this release.
"""
