"""The Kafka security settings: flags and variables, the combinations refused, the kafka-python arguments,
and a password that shows nowhere."""

from __future__ import annotations

import argparse
import ssl

import pytest
from tls_samples import make_pki

from worker import commands
from worker.kafka_security import KafkaSecurity, KafkaSecurityError, Secret
from worker.settings import Settings, SettingsError, kafka_security_from_args

PASSWORD = "pa55-w0rd-never-shown"
SCRAM_ENV = {
    "UAPT_SECURITY_PROTOCOL": "sasl_plaintext",
    "UAPT_SASL_MECHANISM": "scram-sha-512",
    "UAPT_SASL_USERNAME": "captioner",
    "UAPT_SASL_PASSWORD": PASSWORD,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_plain_text_is_the_default_and_adds_nothing():
    settings = Settings.from_sources(env={})
    assert settings.kafka_security == KafkaSecurity()
    assert settings.kafka_security.client_config() == {"security_protocol": "PLAINTEXT"}


def test_sasl_from_the_environment_gives_the_clients_their_login():
    config = Settings.from_sources(env=SCRAM_ENV).kafka_security.client_config()
    assert config == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "captioner",
        "sasl_plain_password": PASSWORD,
    }


def test_the_password_file_gives_its_first_line_and_flags_beat_the_environment(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(f"{PASSWORD}\nignored second line\n")
    env = {**SCRAM_ENV, "UAPT_SASL_MECHANISM": "PLAIN"}
    del env["UAPT_SASL_PASSWORD"]
    settings = Settings.from_sources({"sasl_password_file": str(secret), "sasl_mechanism": "SCRAM-SHA-256"}, env=env)
    config = settings.kafka_security.client_config()
    assert (config["sasl_mechanism"], config["sasl_plain_password"]) == ("SCRAM-SHA-256", PASSWORD)


def test_tls_gives_a_context_that_trusts_the_ca_checks_host_names_and_holds_the_client_certificate(pki):
    env = {"UAPT_SECURITY_PROTOCOL": "SSL", "UAPT_SSL_CAFILE": str(pki.ca),
           "UAPT_SSL_CERTFILE": str(pki.client_cert), "UAPT_SSL_KEYFILE": str(pki.client_key)}
    config = Settings.from_sources(env=env).kafka_security.client_config()
    assert config["security_protocol"] == "SSL"
    context = config["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [dict(c["subject"][0])["commonName"] for c in context.get_ca_certs()] == ["test-ca"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UAPT_SECURITY_PROTOCOL": "TLS"}, "security_protocol must be one of"),
        ({**SCRAM_ENV, "UAPT_SASL_MECHANISM": ""}, "needs sasl_mechanism"),
        ({**SCRAM_ENV, "UAPT_SASL_MECHANISM": "GSSAPI"}, "needs sasl_mechanism"),
        ({**SCRAM_ENV, "UAPT_SASL_USERNAME": ""}, "needs sasl_username"),
        ({**SCRAM_ENV, "UAPT_SASL_PASSWORD": ""}, "exactly one of sasl_password_file and the UAPT_SASL_PASSWORD"),
        ({**SCRAM_ENV, "UAPT_SASL_PASSWORD_FILE": "/no/such/password"}, "exactly one of"),
        ({**SCRAM_ENV, "UAPT_SASL_PASSWORD": "", "UAPT_SASL_PASSWORD_FILE": "/no/such/password"}, "sasl_password_file /no/such/password is not a file"),
        ({"UAPT_SASL_USERNAME": "captioner"}, "sasl_username is set but security_protocol PLAINTEXT uses no SASL"),
        ({"UAPT_SASL_PASSWORD": PASSWORD}, "sasl_password is set but security_protocol PLAINTEXT uses no SASL"),
        ({**SCRAM_ENV, "UAPT_SSL_CAFILE": "/etc/hostname"}, "ssl_cafile is set but security_protocol SASL_PLAINTEXT uses no SSL"),
        ({"UAPT_SECURITY_PROTOCOL": "SSL", "UAPT_SSL_CAFILE": "/no/such/ca.pem"}, "ssl_cafile /no/such/ca.pem is not a file"),
        ({"UAPT_SECURITY_PROTOCOL": "SSL", "UAPT_SSL_KEYFILE": "/etc/hostname"}, "ssl_keyfile needs ssl_certfile"),
    ],
)
def test_combinations_that_would_not_do_what_was_meant_are_refused(env, message):
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_sources(env=env)
    assert PASSWORD not in str(refused.value)


def test_an_empty_password_file_is_refused(tmp_path):
    (tmp_path / "password").write_text("\n")
    env = {**SCRAM_ENV, "UAPT_SASL_PASSWORD": "", "UAPT_SASL_PASSWORD_FILE": str(tmp_path / "password")}
    with pytest.raises(SettingsError, match="the SASL password is empty"):
        Settings.from_sources(env=env)


def test_a_file_that_is_not_a_certificate_is_one_clear_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile=tmp_path / "ca.pem")
    with pytest.raises(KafkaSecurityError, match="ssl_cafile .* not a PEM CA certificate"):
        security.client_config()


def test_the_password_shows_in_no_repr_str_or_help(capsys):
    settings = Settings.from_sources(env=SCRAM_ENV)
    for text in (repr(settings), str(settings), repr(settings.kafka_security), f"{settings.sasl_password}"):
        assert PASSWORD not in text
    assert repr(Secret(PASSWORD)) == "Secret('***')"
    with pytest.raises(SystemExit):
        from cli.main import main

        main(["worker", "--help"])
    out = capsys.readouterr().out
    assert "never a flag" in out and "UAPT_SASL_PASSWORD" in out


@pytest.mark.parametrize("command", [["worker"], ["publish", "a.png", "--user", "u"], ["tail"], ["publish-forget", "u"]])
@pytest.mark.parametrize(
    ("flag", "says"),
    [(["--sasl-password", PASSWORD], "--sasl-password is not accepted: never a flag"),
     ([f"--sasl-password={PASSWORD}"], "UAPT_SASL_PASSWORD"),
     (["--sasl-pass", PASSWORD], "ambiguous option")],  # a prefix is not taken as --sasl-password-file
)
def test_the_password_is_never_a_flag_and_a_try_does_not_echo_it(command, flag, says, capsys):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as refused:
        parser.parse_args([*command, *flag])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert says in err and PASSWORD not in err


@pytest.mark.parametrize("command", [["publish", "a.png", "--user", "u"], ["tail"], ["publish-forget", "u"]])
def test_every_client_command_takes_the_security_settings(command, monkeypatch, tmp_path):
    for name, value in SCRAM_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UAPT_BATCH_SIZE", "not read by a client command")
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([*command, "--sasl-mechanism", "SCRAM-SHA-256", "--bootstrap-servers", "k:9093"])
    security = kafka_security_from_args(args)
    assert (security.security_protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")
    assert security.password().reveal() == PASSWORD
