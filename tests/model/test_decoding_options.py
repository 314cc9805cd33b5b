"""`DecodingOptions`: the one declaration of the decoding settings, its checks, its report form and its flags."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from model.cli import add_decoding_args, decoding_from_args
from model.config import DecodingError, DecodingOptions, decoding_field

REPORT_KEYS = ["num_beams", "temperature", "no_repeat_ngram_size", "repetition_penalty", "image_word_weight", "scene_constraint"]
"""The keys of the `decoding` object in `uapt evaluate`'s reports, in their order."""


def test_the_defaults_are_the_papers_search_with_repetition_control() -> None:
    options = DecodingOptions()
    assert (options.num_beams, options.temperature) == (3, 0.8)
    assert (options.no_repeat_ngram_size, options.repetition_penalty) == (3, 1.2)
    assert options.image_word_weight is None and options.scene_constraint is True
    assert options.max_new_tokens is None and options.n_best == 3 and options.length_penalty == 1.0
    assert not options.greedy and DecodingOptions(num_beams=1).greedy


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_beams": 0}, "num_beams"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"repetition_penalty": 0.9}, "repetition_penalty"),
        ({"image_word_weight": -0.5}, "image_word_weight"),
        ({"image_word_weight": float("inf")}, "image_word_weight"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_return_sequences": 4}, "num_return_sequences"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
    ],
)
def test_a_bad_value_is_a_value_error_naming_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DecodingError, match=f"^{field} ") as raised:
        DecodingOptions(**kwargs)
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)


def test_the_options_are_frozen_and_checked_again_when_replaced() -> None:
    options = DecodingOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.num_beams = 5  # type: ignore[misc]
    with pytest.raises(DecodingError, match="num_beams"):
        dataclasses.replace(options, num_beams=0)


def test_to_dict_has_the_report_keys_and_adds_the_length_settings_only_when_set() -> None:
    assert list(DecodingOptions().to_dict()) == REPORT_KEYS
    assert DecodingOptions(num_beams=2, image_word_weight=0.5).to_dict() == {
        "num_beams": 2, "temperature": 0.8, "no_repeat_ngram_size": 3, "repetition_penalty": 1.2,
        "image_word_weight": 0.5, "scene_constraint": True,
    }
    shaped = DecodingOptions(max_new_tokens=12, num_return_sequences=2, length_penalty=0.7).to_dict()
    assert list(shaped) == [*REPORT_KEYS, "max_new_tokens", "num_return_sequences", "length_penalty"]
    assert (shaped["max_new_tokens"], shaped["num_return_sequences"], shaped["length_penalty"]) == (12, 2, 0.7)


def _decoding_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_decoding_args(parser)
    return parser


def test_the_flags_take_their_defaults_and_help_from_the_fields() -> None:
    parser = _decoding_parser()
    assert decoding_from_args(parser.parse_args([])) == DecodingOptions()
    helps = {action.dest: action.help for action in parser._actions}
    for name in ("num_beams", "temperature", "no_repeat_ngram_size", "repetition_penalty", "image_word_weight", "scene_constraint"):
        assert decoding_field(name).metadata["help"] in helps[name]
    assert f"(default: {DecodingOptions().num_beams})" in helps["num_beams"]


def test_decoding_from_args_reads_every_flag_a_command_has() -> None:
    args = _decoding_parser().parse_args(
        ["--num-beams", "1", "--temperature", "1.5", "--no-repeat-ngram-size", "0", "--repetition-penalty", "1.0",
         "--image-word-weight", "0", "--no-scene-constraint"]
    )
    assert decoding_from_args(args) == DecodingOptions(
        num_beams=1, temperature=1.5, no_repeat_ngram_size=0, repetition_penalty=1.0, image_word_weight=0.0,
        scene_constraint=False,
    )
    args.max_new_tokens, args.length_penalty = 7, 0.5  # `uapt caption` also has these two flags
    assert decoding_from_args(args).max_new_tokens == 7 and decoding_from_args(args).length_penalty == 0.5
    args.temperature = -1.0
    with pytest.raises(DecodingError, match="temperature"):
        decoding_from_args(args)


def test_unknown_field_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="no field 'beam_width'"):
        decoding_field("beam_width")
