"""`Guidance`: the decoding aids a checkpoint holds beside its weights, loaded together by `load_guidance`.

`model.factory.load_model` attaches them to the model it builds (`UAPT.guidance`);
decoding asks the tagger for a logit bias and the scene reader for required words, and
the captioner asks the OOD file (`model.guidance.ood`) whether to abstain.
A checkpoint without them decodes with the network alone.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from model.guidance.ood import NAME as OOD
from model.guidance.ood import OODError, OODGuard, load_ood
from model.guidance.scene_reader import NAME as SCENE_READER
from model.guidance.scene_reader import SceneReader, load_scene_reader
from model.guidance.storage import readout_files
from model.guidance.tagger import NAME as TAGGER
from model.guidance.tagger import ImageWordTagger, load_tagger

READOUT_NAMES = (TAGGER, SCENE_READER, OOD)
"""The read-outs a checkpoint's folder may hold beside its weights (`model.guidance.storage`)."""
READOUT_FILES = tuple(file for name in READOUT_NAMES for file in readout_files(name))
"""Their files, which travel with a copied checkpoint."""


class Guidance(nn.Module):
    """The image-word tagger, the scene reader and the OOD file; each is None where the checkpoint has none.

    A module, so that moving or casting the model it is attached to moves and casts them too.
    """

    tagger: ImageWordTagger | None
    scene_reader: SceneReader | None
    ood: OODGuard | None

    def __init__(
        self, tagger: ImageWordTagger | None = None, scene_reader: SceneReader | None = None, ood: OODGuard | None = None
    ) -> None:
        super().__init__()
        self.add_module("tagger", tagger)
        self.add_module("scene_reader", scene_reader)
        self.add_module("ood", ood)


def load_guidance(
    directory: str | Path, image_dim: int, vocab_size: int, backbone_id: str | None = None, image_tokens: int | None = None
) -> Guidance:
    """The aids saved in checkpoint folder `directory` for a model with these image features and LM vocabulary.

    An aid the folder lacks is None; a damaged or unfitting one raises (ImageWordsError, SceneReaderError,
    ReadoutError, OODError). The OOD file is read only when `backbone_id` and `image_tokens` say what it must fit.
    """
    tagger, reader = load_tagger(directory, image_dim, vocab_size), load_scene_reader(directory, image_dim, vocab_size)
    ood = None
    if backbone_id is not None and image_tokens is not None:
        ood = load_ood(directory, backbone_id, (image_tokens, image_dim))
        if ood is not None and ood.confidence.uses_scene_reader and reader is None:
            raise OODError(f"{directory}: the OOD file's caption confidence was calibrated with a scene reader; the checkpoint has none")
    return Guidance(tagger, reader, ood)
