"""The OOD score, the caption confidence, their file beside a checkpoint, and the abstention they drive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ood_fixtures import checkpoint_with_ood, tiny_guard

from model.captioner import Captioner
from model.checkpoint import copy_checkpoint
from model.config import DecodingOptions
from model.factory import load_model
from model.guidance.abstention import LOW_CONFIDENCE, OUT_OF_DISTRIBUTION, AbstentionError, AbstentionPolicy
from model.guidance.confidence import BASE_INPUTS, expected_calibration_error, fit_confidence
from model.guidance.ood import NAME, OODError, OODFit, fit_ood_scorer, load_ood
from model.guidance.storage import ReadoutError, readout_files
from model_fixtures import SAMPLE_KEYWORDS, sample_images, tiny_model


def test_a_saved_ood_file_loads_with_its_checkpoint_and_scores_as_before(tmp_path: Path) -> None:
    folder = checkpoint_with_ood(tiny_model(), tmp_path / "ckpt", max_ood_score=0.3, min_confidence=0.2)
    model = load_model(None, checkpoint=folder, device="cpu")
    features = tiny_model().encode_images(sample_images(3))
    assert model.guidance.ood is not None and model.guidance.ood.policy == AbstentionPolicy(0.3, 0.2)
    torch.testing.assert_close(model.guidance.ood.scorer(features), tiny_guard(tiny_model()).scorer(features))
    TENSORS_FILE, META_FILE = readout_files(NAME)
    copied = copy_checkpoint(folder, tmp_path / "copy")  # the OOD file travels with a copied checkpoint
    assert (copied / TENSORS_FILE).is_file() and (copied / META_FILE).is_file()


def test_a_damaged_ood_file_is_refused(tmp_path: Path) -> None:
    folder = checkpoint_with_ood(tiny_model(), tmp_path / "ckpt")
    tensors_file = folder / readout_files(NAME)[0]
    data = bytearray(tensors_file.read_bytes())
    data[-5] ^= 0xFF
    tensors_file.write_bytes(bytes(data))
    with pytest.raises(ReadoutError, match="checksum"):
        load_model(None, checkpoint=folder, device="cpu")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("backbone_id", "image=other@imagenet/grid;context=x;lm=y", "fitted on backbone"),
     ("feature_shape", [49, 1280], "image features of shape"),
     ("format", "uapt-ood/0", "not in format")],
)
def test_an_ood_file_for_another_backbone_or_shape_is_refused(tmp_path: Path, field: str, value, message: str) -> None:
    folder = checkpoint_with_ood(tiny_model(), tmp_path / "ckpt")
    meta_file = folder / readout_files(NAME)[1]
    meta = json.loads(meta_file.read_text())
    meta[field] = value
    meta_file.write_text(json.dumps(meta))
    with pytest.raises((OODError, ReadoutError), match=message):
        load_model(None, checkpoint=folder, device="cpu")


def test_the_score_is_near_zero_on_a_train_image_and_grows_away_from_them() -> None:
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn(1, 1, 32, generator=generator)
    train = centre + 0.1 * torch.randn(200, 4, 32, generator=generator)
    scorer = fit_ood_scorer(train, OODFit(dims=8, k=1))
    near, far = scorer(train[:5]), scorer(torch.randn(5, 4, 32, generator=generator) * 3)
    assert near.max() < 1e-3 and far.min() > 0.05


def test_judge_abstains_out_of_distribution_before_low_confidence_and_sets_every_confidence() -> None:
    images = sample_images(3)
    captioner = Captioner(tiny_model(), DecodingOptions(max_new_tokens=4))
    assert captioner.policy is None and captioner.judge([None] * 2, [[], []])[0].ood_score is None  # no OOD file
    model = tiny_model()
    model.guidance.ood = tiny_guard(model)
    try:
        features = Captioner(model).encode_images(images)
        captions = Captioner(model, DecodingOptions(max_new_tokens=4)).caption_encoded(features, SAMPLE_KEYWORDS[:3], num_captions=2)
        ood = model.guidance.ood.scorer(torch.stack(features)).tolist()
        shown = Captioner(model, max_ood_score=max(ood) + 1, min_confidence=0.0).judge(features, captions)
        assert [j.reason for j in shown] == [None] * 3
        assert all(0 <= c.confidence <= 1 for image in captions for c in image)
        assert [j.confidence for j in shown] == [image[0].confidence for image in captions]
        strange = Captioner(model, max_ood_score=min(ood) - 1e-3, min_confidence=1.0).judge(features, captions)
        assert [j.reason for j in strange] == [OUT_OF_DISTRIBUTION] * 3
        unsure = Captioner(model, max_ood_score=max(ood) + 1, min_confidence=1.0).judge(features, captions)
        assert [j.reason for j in unsure] == [LOW_CONFIDENCE] * 3 and unsure[0].ood_score == pytest.approx(ood[0])
    finally:
        model.guidance.ood = None  # the shared tiny model goes back as it was


def test_thresholds_are_checked_and_need_an_ood_file() -> None:
    with pytest.raises(AbstentionError, match="uapt fit-ood"):
        Captioner(tiny_model(), min_confidence=0.5)
    with pytest.raises(AbstentionError, match="min_confidence"):
        AbstentionPolicy(0.3, 1.5)
    with pytest.raises(AbstentionError, match="max_ood_score"):
        AbstentionPolicy(float("nan"), 0.5)
    with pytest.raises(OODError, match="val_quantile"):
        OODFit(val_quantile=0.2)


def test_expected_calibration_error_by_hand() -> None:
    # bin 0.2: mean confidence 0.2, 1 of 2 right (gap 0.3); bin 0.9: confidence 0.9, 2 of 2 right (gap 0.1)
    assert expected_calibration_error([0.2, 0.2, 0.9, 0.9], [True, False, True, True]) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0


def test_the_fitted_confidence_is_calibrated_on_new_data_like_its_own() -> None:
    def draw(count: int, seed: int) -> tuple[torch.Tensor, list[bool]]:
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randn(count, 2, generator=generator)
        truth = torch.sigmoid(2.0 * rows[:, 0] - 1.0 * rows[:, 1] + 0.5)
        return rows, (torch.rand(count, generator=generator) < truth).tolist()

    rows, right = draw(4000, 0)
    confidence = fit_confidence(rows, right, BASE_INPUTS)
    test_rows, test_right = draw(4000, 1)
    assert expected_calibration_error(confidence(test_rows).tolist(), test_right) < 0.03
    assert expected_calibration_error([0.5] * 4000, test_right) > expected_calibration_error(confidence(test_rows).tolist(), test_right)
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_confidence(rows, [True] * 4000, BASE_INPUTS)


def test_without_an_ood_file_nothing_loads(tmp_path: Path) -> None:
    assert load_ood(tmp_path, "any", (1, 8)) is None


def test_the_isotonic_map_is_piecewise_linear_and_flat_beyond_its_ends() -> None:
    from model.guidance.confidence import CaptionConfidence

    confidence = CaptionConfidence(BASE_INPUTS, torch.zeros(2), torch.ones(2), torch.zeros(2), torch.zeros(1),
                                   torch.tensor([0.2, 0.6]), torch.tensor([0.1, 0.9]))
    mapped = confidence.calibrated(torch.tensor([0.0, 0.2, 0.4, 0.6, 1.0]))
    torch.testing.assert_close(mapped, torch.tensor([0.1, 0.1, 0.5, 0.9, 0.9]))


def test_the_score_separates_real_photos_from_the_synthetic_scenes(small_dataset: Path) -> None:
    """The offline preset's ImageNet features: photos the generator never pastes lie far from every drawn scene."""
    from PIL import Image
    from skimage import data as skimage_data
    from sklearn.datasets import load_sample_images

    from model.config import get_config
    from model.data.dataset import load_posts
    from model.encoders import build_encoders

    encoder, _ = build_encoders(get_config("offline"))
    posts = load_posts(small_dataset)

    def encode(split: str) -> torch.Tensor:
        images = []
        for post in posts:
            if post.split == split:
                with Image.open(small_dataset / post.image) as image:
                    images.append(image.convert("RGB"))
        return encoder.eval()(images)

    photos = [Image.fromarray(getattr(skimage_data, name)()).convert("RGB") for name in ("camera", "coins", "moon", "immunohistochemistry")]
    photos += [Image.fromarray(array) for array in load_sample_images().images]
    scorer = fit_ood_scorer(encode("train"), OODFit(dims=16, k=3))
    synthetic, real = scorer(torch.cat([encode("val"), encode("test")])), scorer(encoder(photos))
    assert real.min() > synthetic.max(), (real.tolist(), synthetic.max())
