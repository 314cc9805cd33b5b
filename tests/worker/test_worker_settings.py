import argparse
import dataclasses
from pathlib import Path

import pytest

from worker import commands
from worker.settings import ImagePolicy, Settings, SettingsError


def test_defaults_match_the_design():
    s = Settings.from_sources(env={})
    assert (s.input_topic, s.output_topic, s.dlq_topic) == ("uapt.posts", "uapt.captions", "uapt.posts.dlq")
    assert s.database_url == "sqlite:///uapt-profiles.db" and s.preset == "offline" and s.allow_hosts == ()


def test_env_is_read_and_flags_win():
    env = {"UAPT_BATCH_SIZE": "32", "UAPT_PRESET": "tiny", "UAPT_ALLOW_HOSTS": "10.0.0.0/8, cdn.local",
           "UAPT_CREATE_TOPICS": "false", "UAPT_IMAGE_ROOT": "/srv/img", "UAPT_CONNECT_TIMEOUT_S": "1.5",
           "UAPT_REPLICATION_FACTOR": "3"}
    s = Settings.from_sources({"batch_size": "8", "preset": None}, env=env)
    assert s.batch_size == 8 and s.preset == "tiny" and s.create_topics is False
    assert s.allow_hosts == ("10.0.0.0/8", "cdn.local") and s.image_root == Path("/srv/img")
    assert s.connect_timeout_s == 1.5 and s.replication_factor == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [({"UAPT_BATCH_SIZE": "many"}, "UAPT_BATCH_SIZE"), ({"UAPT_BATCH_SIZE": "0"}, "batch_size"),
     ({"UAPT_CREATE_TOPICS": "maybe"}, "create_topics"), ({"UAPT_NUM_CAPTIONS": "9"}, "max_captions"),
     ({"UAPT_REPLICATION_FACTOR": "0"}, "replication_factor")],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_sources(env=env)


def test_image_word_weight_defaults_to_the_checkpoints_and_is_checked():
    from worker.service import load_captioner

    assert Settings.from_sources(env={}).image_word_weight is None
    assert Settings.from_sources(env={"UAPT_IMAGE_WORD_WEIGHT": "0"}).image_word_weight == 0.0
    with pytest.raises(SettingsError, match="image_word_weight"):
        Settings.from_sources(env={"UAPT_IMAGE_WORD_WEIGHT": "-1"})
    assert load_captioner(Settings(preset="tiny", device="cpu", image_word_weight=0.5)).decoding.image_word_weight == 0.5


def test_the_scene_constraint_is_on_by_default_and_reaches_the_captioner():
    from worker.service import load_captioner

    assert Settings.from_sources(env={}).scene_constraint is True
    assert Settings.from_sources(env={"UAPT_SCENE_CONSTRAINT": "false"}).scene_constraint is False
    with pytest.raises(SettingsError, match="scene_constraint"):
        Settings.from_sources(env={"UAPT_SCENE_CONSTRAINT": "sometimes"})
    assert load_captioner(Settings(preset="tiny", device="cpu", scene_constraint=False)).decoding.scene_constraint is False


def test_the_serving_dtype_defaults_to_auto_is_checked_and_reaches_the_captioner():
    from worker.service import load_captioner

    assert Settings.from_sources(env={}).serving_dtype == "auto"
    assert Settings.from_sources(env={"UAPT_SERVING_DTYPE": "bfloat16"}).serving_dtype == "bfloat16"
    with pytest.raises(SettingsError, match="serving_dtype must be one of auto, float32, bfloat16, int8, got 'fp16'"):
        Settings.from_sources(env={"UAPT_SERVING_DTYPE": "fp16"})
    assert load_captioner(Settings(preset="tiny", device="cpu", serving_dtype="int8")).serving_dtype == "int8"


def test_repetition_control_settings_default_to_the_models_and_are_checked():
    from model.config import DecodingOptions

    s = Settings.from_sources(env={})
    assert (s.no_repeat_ngram_size, s.repetition_penalty) == (DecodingOptions().no_repeat_ngram_size, DecodingOptions().repetition_penalty)
    s = Settings.from_sources(env={"UAPT_NO_REPEAT_NGRAM_SIZE": "0", "UAPT_REPETITION_PENALTY": "1.5"})
    assert (s.no_repeat_ngram_size, s.repetition_penalty) == (0, 1.5)
    with pytest.raises(SettingsError, match="repetition_penalty"):
        Settings.from_sources(env={"UAPT_REPETITION_PENALTY": "0.5"})
    with pytest.raises(SettingsError, match="no_repeat_ngram_size"):
        Settings.from_sources(env={"UAPT_NO_REPEAT_NGRAM_SIZE": "-1"})


def test_image_policy_defaults_are_the_settings_defaults():
    assert Settings().image_policy == ImagePolicy()


def test_image_policy_takes_every_image_setting():
    s = Settings.from_sources(
        env={"UAPT_IMAGE_ROOT": "/srv/img", "UAPT_ALLOW_HOSTS": "cdn.local", "UAPT_MAX_IMAGE_BYTES": "5",
             "UAPT_MAX_IMAGE_PIXELS": "6", "UAPT_CONNECT_TIMEOUT_S": "0.5", "UAPT_READ_TIMEOUT_S": "2",
             "UAPT_MAX_REDIRECTS": "0"}
    )
    assert s.image_policy == ImagePolicy(
        root=Path("/srv/img"), allow=("cdn.local",), max_bytes=5, max_pixels=6, connect_timeout_s=0.5,
        read_timeout_s=2.0, max_redirects=0,
    )


def command_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_publish_and_tail_default_to_the_worker_settings(monkeypatch):
    for name in ("UAPT_BOOTSTRAP_SERVERS", "UAPT_INPUT_TOPIC", "UAPT_OUTPUT_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    worker = Settings()
    publish = command_args("publish", "a.png", "--user", "u")
    assert (publish.topic, publish.bootstrap_servers) == (worker.input_topic, worker.bootstrap_servers)
    assert command_args("tail").topic == worker.output_topic
    broker = command_args("broker")
    assert f"{broker.host}:{broker.port}" == worker.bootstrap_servers  # the embedded broker is where workers look

    monkeypatch.setenv("UAPT_OUTPUT_TOPIC", "captions.b")
    assert command_args("tail").topic == "captions.b"


def run_cli(*args: str) -> SystemExit:
    from cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value


def test_worker_help_documents_every_setting(capsys):
    assert run_cli("worker", "--help").code == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(Settings):
        if not field.metadata.get("env_only"):  # the SASL password has no flag
            assert f"--{field.name.replace('_', '-')}" in out
        assert f"UAPT_{field.name.upper()}" in out


def test_user_errors_are_one_clear_line():
    code = run_cli("publish", "/no/such/image.png", "--user", "u").code
    assert isinstance(code, str) and code.startswith("uapt publish: IMAGE '/no/such/image.png'") and "\n" not in code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--batch-size", "zero"), "uapt worker: --batch-size"),
        (("--linger-ms", "-5"), "uapt worker: linger_ms"),
        (("--preset", "tiny", "--database-url", "foo://x"), "uapt worker: Can't load plugin: sqlalchemy.dialects:foo"),
        (("--preset", "tiny", "--database-url", "postgresql://postgres@127.0.0.1:5432/no_such_db_uapt"), "uapt worker: database error: connection failed"),
        (("--preset", "tiny", "--database-url", "postgresql://no_such_role_uapt@127.0.0.1:5432/test"), "uapt worker: database error: connection failed"),
        (("--preset", "tiny", "--database-url", "postgresql://postgres@no-such-host.invalid:5432/test"), "uapt worker: database host 'no-such-host.invalid' does not resolve"),
        (("--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"), "uapt worker: security_protocol SASL_SSL needs sasl_username"),
        (("--security-protocol", "SSL", "--ssl-cafile", "/no/such/ca.pem"), "uapt worker: ssl_cafile /no/such/ca.pem is not a file"),
    ],
)
def test_worker_configuration_errors_are_one_line_and_exit_2(args, message, capsys):
    assert run_cli("worker", "--metrics-port", "-1", *args).code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message), err


def test_a_bug_in_the_worker_keeps_its_traceback(monkeypatch):
    from worker import service

    def broken(settings):
        raise ValueError("a bug, not a configuration mistake")

    monkeypatch.setattr(service, "run_worker", broken)
    with pytest.raises(ValueError, match="a bug"):
        run_cli("worker", "--preset", "tiny")


def test_the_worker_captioner_decodes_with_the_settings_repetition_control():
    from worker.service import load_captioner

    captioner = load_captioner(Settings(preset="tiny", device="cpu", no_repeat_ngram_size=2, repetition_penalty=1.3))
    assert (captioner.decoding.no_repeat_ngram_size, captioner.decoding.repetition_penalty) == (2, 1.3)


def test_worker_settings_and_the_offline_flags_build_the_same_decoding_options():
    """One owner: the worker's UAPT_* variables and `uapt caption`/`evaluate`'s flags mean the same DecodingOptions."""
    from model.cli import add_decoding_args, decoding_from_args
    from model.config import DecodingOptions

    parser = argparse.ArgumentParser()
    add_decoding_args(parser)
    assert Settings.from_sources(env={}).decoding == decoding_from_args(parser.parse_args([])) == DecodingOptions()
    env = {"UAPT_NO_REPEAT_NGRAM_SIZE": "2", "UAPT_REPETITION_PENALTY": "1.5", "UAPT_IMAGE_WORD_WEIGHT": "0.25",
           "UAPT_SCENE_CONSTRAINT": "false"}
    flags = ["--no-repeat-ngram-size", "2", "--repetition-penalty", "1.5", "--image-word-weight", "0.25",
             "--no-scene-constraint"]
    from_env = Settings.from_sources(env=env).decoding
    assert from_env == decoding_from_args(parser.parse_args(flags))
    assert from_env == DecodingOptions(no_repeat_ngram_size=2, repetition_penalty=1.5, image_word_weight=0.25,
                                       scene_constraint=False)


def test_worker_decoding_settings_show_the_decoding_options_help_and_defaults():
    from model.config import decoding_field

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name in ("no_repeat_ngram_size", "repetition_penalty", "image_word_weight", "scene_constraint"):
        assert fields[name].default == decoding_field(name).default
        assert decoding_field(name).metadata["help"] in fields[name].metadata["help"]

def test_abstention_thresholds_default_to_the_checkpoints_and_reach_the_captioner(tmp_path: Path):
    from ood_fixtures import checkpoint_with_ood

    from model.factory import load_model
    from worker.service import load_captioner

    assert Settings.from_sources(env={}).max_ood_score is None and Settings.from_sources(env={}).min_confidence is None
    s = Settings.from_sources({"min_confidence": "0.6"}, env={"UAPT_MAX_OOD_SCORE": "0.25", "UAPT_MIN_CONFIDENCE": "0.4"})
    assert (s.max_ood_score, s.min_confidence) == (0.25, 0.6)  # the flag beats the environment
    with pytest.raises(SettingsError, match="min_confidence"):
        Settings.from_sources(env={"UAPT_MIN_CONFIDENCE": "1.5"})
    with pytest.raises(SettingsError, match="max_ood_score"):
        Settings.from_sources(env={"UAPT_MAX_OOD_SCORE": "nan"})
    checkpoint = checkpoint_with_ood(load_model("tiny", device="cpu"), tmp_path / "ckpt", max_ood_score=0.3, min_confidence=0.2)
    stored = load_captioner(Settings(preset="tiny", device="cpu", checkpoint=checkpoint)).policy
    assert (stored.max_ood_score, stored.min_confidence) == (0.3, 0.2)
    given = load_captioner(Settings(preset="tiny", device="cpu", checkpoint=checkpoint, max_ood_score=0.9, min_confidence=0.1)).policy
    assert (given.max_ood_score, given.min_confidence) == (0.9, 0.1)
