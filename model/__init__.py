"""The UAPT network and its inference: config and presets, frozen encoders, LM loading,
the prefix networks, decoding, checkpoints, and the captioner the worker calls.

The decoding aids fitted on frozen features (image-word tagger, scene reader) are
`model.guidance`. Offline work lives in sub-packages: `model.data` (dataset format,
synthetic data, statistics), `model.training` (feature cache, trainer, ablations, the
aids' fitting) and `model.evaluation` (metrics, grounding, reports). The network and
its aids never import them (pyproject.toml's import contracts).
Build a model with `model.factory.load_model`. This package imports nothing on its
own, so that `uapt --help` does not pay for torch.
"""
