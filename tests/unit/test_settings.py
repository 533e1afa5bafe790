from pathlib import Path

import pytest
from pydantic import SecretStr

from softswitch.settings import Settings, normalize_postgres_url

pytestmark = pytest.mark.unit


def test_every_setting_comes_from_a_softswitch_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTSWITCH_DATABASE_URL", "postgres://alice@db.example/calls")
    monkeypatch.setenv("SOFTSWITCH_AMQP_URL", "amqp://u:p@127.0.0.1:5673/")
    monkeypatch.setenv("SOFTSWITCH_ARI_URL", "http://127.0.0.1:8089/")
    monkeypatch.setenv("SOFTSWITCH_ARI_PASSWORD", "ari-secret")
    monkeypatch.setenv("SOFTSWITCH_AMI_PORT", "5039")
    monkeypatch.setenv("SOFTSWITCH_KAMAILIO_JSONRPC_URL", "http://127.0.0.1:6000/RPC")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database.url == "postgresql://alice@db.example/calls"
    assert settings.amqp.url.get_secret_value() == "amqp://u:p@127.0.0.1:5673/"
    assert settings.ari.url == "http://127.0.0.1:8089/"
    assert settings.ari.password == SecretStr("ari-secret")
    assert settings.ami.port == 5039
    assert settings.kamailio.jsonrpc_url == "http://127.0.0.1:6000/RPC"


def test_dotenv_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SOFTSWITCH_AMI_USER=from-file\nSOFTSWITCH_AMI_PORT=6000\n")
    monkeypatch.setenv("SOFTSWITCH_AMI_PORT", "7000")
    settings = Settings(_env_file=str(env_file))  # type: ignore[call-arg]
    assert settings.ami.user == "from-file"
    assert settings.ami.port == 7000


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgres://user:pw@host:5433/db", "postgresql://user:pw@host:5433/db"),
        ("postgresql+psycopg://user@host/db", "postgresql://user@host/db"),
    ],
)
def test_postgres_urls_are_accepted_as_users_write_them(written: str, normalized: str) -> None:
    assert normalize_postgres_url(written) == normalized


def test_a_non_postgres_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        normalize_postgres_url("mysql://user@host/db")


def test_local_defaults_point_at_loopback() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "@127.0.0.1:" in settings.database.url
    assert settings.ari.url.startswith("http://127.0.0.1:")
    assert settings.ami.host == "127.0.0.1"
    assert settings.kamailio.jsonrpc_url.startswith("http://127.0.0.1:")


def test_production_refuses_missing_secrets_and_guest_broker() -> None:
    with pytest.raises(ValueError) as refused:
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    message = str(refused.value)
    for name in (
        "SOFTSWITCH_ARI_PASSWORD",
        "SOFTSWITCH_AMI_PASSWORD",
        "SOFTSWITCH_KAMAILIO_JSONRPC_TOKEN",
        "SOFTSWITCH_AMQP_URL",
    ):
        assert name in message


def test_production_refuses_metrics_on_all_interfaces() -> None:
    secrets = {"password": "a-long-enough-secret"}
    with pytest.raises(ValueError, match="SOFTSWITCH_METRICS_HOST"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="production",
            ari=secrets,
            ami=secrets,
            kamailio={"jsonrpc_token": "a-long-enough-token"},
            amqp={"url": "amqp://softswitch:pw@10.0.0.5/"},
            metrics={"host": "0.0.0.0"},
        )


def test_production_accepts_real_secrets() -> None:
    secrets = {"password": "a-long-enough-secret"}
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="production",
        ari=secrets,
        ami=secrets,
        kamailio={"jsonrpc_token": "a-long-enough-token"},
        amqp={"url": "amqp://softswitch:pw@10.0.0.5/"},
    )
    assert settings.environment == "production"


def test_trusted_sources_are_normalised_networks_or_refused() -> None:
    kamailio = Settings(  # type: ignore[call-arg]
        _env_file=None, kamailio={"trusted_sources": " 10.1.2.3/8, 192.0.2.7 ,"}
    ).kamailio
    assert kamailio.trusted_sources == "10.0.0.0/8,192.0.2.7/32"
    with pytest.raises(ValueError, match="trusted_sources"):
        Settings(_env_file=None, kamailio={"trusted_sources": "10.0.0.0/8,intercoms"})  # type: ignore[call-arg]
