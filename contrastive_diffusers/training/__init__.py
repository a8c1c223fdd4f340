"""Contrastive prompt learning and LoRA fine-tuning (ReVersion, MCPL, EvoGen).

Not implemented yet: this subpackage is reserved for the training framework and has no
public API in this release.
"""
