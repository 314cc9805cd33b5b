"""The UAPT network and its inference: config and presets, frozen encoders, LM loading,
the prefix networks, decoding, checkpoints, and the captioner the worker calls.

Offline work lives in sub-packages: `model.data` (dataset format, synthetic data,
statistics), `model.training` (feature cache, trainer, ablations) and
`model.evaluation` (metrics, grounding, reports). The network never imports them.
Build a model with `model.factory.load_model`. This package imports nothing on its
own, so that `uapt --help` does not pay for torch.
"""
