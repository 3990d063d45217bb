"""Settings: every deployment value from FHIRSERVER_* variables (the one place they are read),
layered as mode defaults < variables < flags; secrets stay out of the repr."""
from __future__ import annotations

from fhirserver.cli import _settings, build_parser
from fhirserver.config import Settings, settings_from_env


def test_variables_fill_the_settings_and_flags_win() -> None:
    env = {"FHIRSERVER_DICOM_PROCESSES": "3", "FHIRSERVER_DICOM_SWITCH_INTERVAL": "0.005",
           "FHIRSERVER_PORT": "9000"}
    settings = settings_from_env(env, port=9100)
    assert (settings.dicom_processes, settings.dicom_switch_interval, settings.port) == (3, 0.005, 9100)
    assert settings_from_env({}).dicom_processes == 0  # 0: one receiver per CPU


def test_defaults_under_variables_under_flags() -> None:
    defaults = {"clinic_name": "Demo", "clinic_timezone": "Europe/Madrid"}
    settings = settings_from_env({"FHIRSERVER_CLINIC_NAME": "Mine"}, defaults=defaults, clinic_timezone="UTC")
    assert (settings.clinic_name, settings.clinic_timezone) == ("Mine", "UTC")
    assert settings_from_env({"FHIRSERVER_CLINIC_NAME": ""}, defaults=defaults).clinic_name == "Demo"


def test_secrets_are_read_but_never_shown() -> None:
    env = {"FHIRSERVER_USER_PASSWORD": "pw-secret", "FHIRSERVER_TOKEN": "tok-secret",
           "FHIRSERVER_CLIENT_SECRET": "client-secret"}
    settings = settings_from_env(env)
    assert (settings.user_password, settings.token, settings.client_secret) == \
        ("pw-secret", "tok-secret", "client-secret")
    assert "secret" not in repr(settings)
    assert "secret" not in repr(Settings(token="tok-secret"))


def test_dev_mode_keeps_the_operators_own_clinic(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FHIRSERVER_CLINIC_NAME", "Clinica Propia")
    monkeypatch.delenv("FHIRSERVER_CLINIC_TIMEZONE", raising=False)
    settings = _settings(build_parser().parse_args(["serve", "--dev"]))
    assert settings.dev_mode and settings.clinic_name == "Clinica Propia"
    assert settings.clinic_timezone == "Europe/Madrid"  # the demo clinic's, the operator set none
    assert not _settings(build_parser().parse_args(["serve"])).dev_mode
