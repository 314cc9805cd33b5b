"""Decoding aids fitted on the frozen image features, stored beside a checkpoint's weights.

`model.guidance.tagger` (image-word tagger: which caption words an image makes likely)
and `model.guidance.scene_reader` (which scene's words beam search must write), each
with a torch-free config module; `model.guidance.ood` (how unlike the training images
an image is) with `model.guidance.confidence` (how likely a caption is right) and
`model.guidance.abstention` (when to withhold a post's captions); `model.guidance.storage`, the one format both are kept
in (safetensors plus a JSON description with their checksum); `model.guidance.aids`,
which loads a checkpoint's aids together (`load_guidance`) for `model.factory.load_model`
to attach. Fitting them is offline work (`model.training.fit_tagger`,
`model.training.fit_scene_reader`, `model.training.fit_ood`). This package imports nothing on its own, so that
`uapt --help` does not pay for torch.
"""
