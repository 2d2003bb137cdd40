"""Unit tests of app.settings: loopback defaults, URL handling, limits and secret hygiene."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from app.settings import Settings, mask_url, sqlalchemy_url

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable Settings reads, so each test states its own environment."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
        monkeypatch.delenv(field, raising=False)


def test_defaults_point_at_loopback() -> None:
    # given an empty environment
    # when the settings are built
    settings = Settings()

    # then every service is reached on this machine
    assert settings.magnetiq_env == "dev"
    assert urlsplit(settings.celery_broker_url).hostname in LOOPBACK
    assert urlsplit(settings.database_url).hostname in LOOPBACK
    assert urlsplit(settings.result_backend_url).hostname in LOOPBACK
    assert settings.smtp_host is None
    assert settings.smtp_server in LOOPBACK
    assert settings.task_soft_time_limit < settings.task_time_limit


def test_smtp_host_overrides_the_local_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a real SMTP server
    monkeypatch.setenv("SMTP_HOST", "smtp.internal")
    monkeypatch.setenv("SMTP_PORT", "2525")

    # when the settings are built
    settings = Settings()

    # then mail goes there
    assert settings.smtp_server == "smtp.internal"
    assert settings.describe()["smtp"] == "smtp.internal:2525"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://fleet:s3cr3t@rabbit:5672/vhost", "amqp://fleet:***@rabbit:5672/vhost"),
        ("postgresql://app:p%40ss@db/magnetiq", "postgresql://app:***@db/magnetiq"),
        ("amqp://fleet:p@ss@rabbit//", "amqp://fleet:***@rabbit//"),
        ("amqp://:onlypw@rabbit//", "amqp://:***@rabbit//"),
        ("amqp://w:one@r0:5672/v;amqp://w:two@r1:5672/v", "amqp://w:***@r0:5672/v;amqp://w:***@r1:5672/v"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    # given a URL with a password
    # when it is masked
    result = mask_url(url)

    # then the password is replaced and the rest is kept
    assert result == masked


@pytest.mark.parametrize(
    "url",
    ["amqp://guest@127.0.0.1:5672//", "postgresql://postgres@127.0.0.1/magnetiq", "amqp://127.0.0.1//"],
)
def test_mask_url_leaves_urls_without_password_alone(url: str) -> None:
    # given a URL without a password
    # when it is masked
    # then it is returned unchanged
    assert mask_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db:5432/magnetiq",
        "postgres://u:pw@db:5432/magnetiq",
        "db+postgresql://u:pw@db:5432/magnetiq",
        "postgresql+psycopg2://u:pw@db:5432/magnetiq",
    ],
)
def test_sqlalchemy_url_normalises_postgres_spellings(url: str) -> None:
    # given any accepted PostgreSQL spelling
    # when it is normalised
    # then it names the psycopg2 driver and keeps the rest
    assert sqlalchemy_url(url) == "postgresql+psycopg2://u:pw@db:5432/magnetiq"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:pw@db/magnetiq",
        "sqlite:///magnetiq.db",
        "postgresql+asyncpg://u:pw@db/magnetiq",
        "db+mysql://u:pw@db/magnetiq",
        "not a url",
    ],
)
def test_sqlalchemy_url_rejects_other_databases(url: str) -> None:
    # given a URL that is not PostgreSQL through psycopg2
    # when it is normalised
    # then it is refused
    with pytest.raises(ValueError, match=r"postgresql|not a URL"):
        sqlalchemy_url(url)


def test_database_url_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a Heroku-style postgres:// URL
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db.internal:5432/magnetiq")

    # when the settings are built
    settings = Settings()

    # then SQLAlchemy gets the psycopg2 spelling
    assert settings.database_url == "postgresql+psycopg2://app@db.internal:5432/magnetiq"


def test_result_backend_defaults_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a database URL and no result backend
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal/magnetiq")

    # when the settings are built
    settings = Settings()

    # then results go to the same database
    assert settings.celery_result_backend is None
    assert settings.result_backend_url == settings.database_url


def test_result_backend_can_be_set_separately(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a result backend in Celery's db+ spelling
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal/magnetiq")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "db+postgresql://app@results.internal/results")

    # when the settings are built
    settings = Settings()

    # then it is used, normalised
    assert settings.result_backend_url == "postgresql+psycopg2://app@results.internal/results"


def test_result_backend_refuses_other_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a MySQL result backend
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "mysql://app@db/results")

    # when the settings are built
    # then they are refused
    with pytest.raises(ValidationError, match="postgresql"):
        Settings()


@pytest.mark.parametrize("url", ["sqs://", "memory://", "kafka://127.0.0.1:9092", "127.0.0.1:5672"])
def test_broker_must_be_rabbitmq_or_redis(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # given a broker the fleet does not run on
    monkeypatch.setenv("CELERY_BROKER_URL", url)

    # when the settings are built
    # then they are refused, naming the brokers it runs on
    with pytest.raises(ValidationError, match="amqp://, amqps://, redis://, rediss:// or sentinel://"):
        Settings()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp"),
        ("amqps://fleet:pw@rabbit.internal:5671/magnetiq", "amqp"),
        ("redis://localhost:6379/0", "redis"),  # the seed's
        ("rediss://:pw@redis.internal:6380/0", "redis"),
        ("sentinel://s1:26379;sentinel://s2:26379", "redis"),
    ],
)
def test_the_seeds_redis_url_and_rabbitmq_urls_are_taken(
    monkeypatch: pytest.MonkeyPatch, url: str, kind: str
) -> None:
    # given a RabbitMQ or Redis URL, the seed's among them
    monkeypatch.setenv("CELERY_BROKER_URL", url)

    # then the settings take it and say which broker it is
    assert Settings().broker == kind


def test_redis_tls_options_use_redis_pys_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a rediss:// broker with a CA bundle
    monkeypatch.setenv("CELERY_BROKER_URL", "rediss://:pw@redis.internal:6380/0")
    monkeypatch.setenv("BROKER_TLS_CA_FILE", "/etc/ssl/redis-ca.pem")

    # then the certificate is required, checked against that bundle and the host name
    assert Settings().broker_ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/etc/ssl/redis-ca.pem",
    }


@pytest.mark.parametrize(("soft", "hard"), [("150", "150"), ("200", "150")])
def test_soft_time_limit_must_be_below_hard(monkeypatch: pytest.MonkeyPatch, soft: str, hard: str) -> None:
    # given a soft limit that is not below the hard limit
    monkeypatch.setenv("TASK_SOFT_TIME_LIMIT", soft)
    monkeypatch.setenv("TASK_TIME_LIMIT", hard)

    # when the settings are built
    # then they are refused
    with pytest.raises(ValidationError, match="TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT"):
        Settings()


def test_soft_time_limit_below_hard_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # given consistent limits
    monkeypatch.setenv("TASK_SOFT_TIME_LIMIT", "30")
    monkeypatch.setenv("TASK_TIME_LIMIT", "45")

    # when the settings are built
    settings = Settings()

    # then both are kept
    assert (settings.task_soft_time_limit, settings.task_time_limit) == (30, 45)


def test_prod_refuses_guest_broker_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # given production with RabbitMQ's default password
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://fleet:guest@rabbit.internal:5672/magnetiq")

    # when the settings are built
    # then they are refused, naming the variable
    with pytest.raises(ValidationError, match="CELERY_BROKER_URL uses a placeholder password"):
        Settings()


def test_prod_refuses_a_placeholder_in_any_url_of_a_failover_list(monkeypatch: pytest.MonkeyPatch) -> None:
    # given production with a broker list whose second node's URL keeps a placeholder
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv(
        "CELERY_BROKER_URL", "amqps://w:Zr7-real@r0:5671/magnetiq;amqps://w:REPLACE_ME@r1:5671/magnetiq"
    )

    # when the settings are built, then they are refused, naming the variable
    with pytest.raises(ValidationError, match="CELERY_BROKER_URL uses a placeholder password"):
        Settings()


def test_prod_refuses_placeholder_smtp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # given production with a real broker password but a placeholder SMTP one
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://fleet:Xk3-real-Secret@rabbit.internal/magnetiq")
    monkeypatch.setenv("DATABASE_URL", REAL_DATABASE_URL)
    monkeypatch.setenv("SMTP_PASSWORD", "changeme")

    # when the settings are built
    # then they are refused
    with pytest.raises(ValidationError, match="SMTP_PASSWORD uses a placeholder password"):
        Settings()


def test_prod_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # given production with real secrets
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqps://fleet:Xk3-real-Secret@rabbit.internal/magnetiq")
    monkeypatch.setenv("DATABASE_URL", REAL_DATABASE_URL)
    monkeypatch.setenv("SMTP_PASSWORD", "Yq9-real-Secret")

    # when the settings are built
    settings = Settings()

    # then they load
    assert settings.magnetiq_env == "prod"


#: A production database URL with a real password.
REAL_DATABASE_URL = "postgresql://magnetiq:Zr7-real-Secret@postgres.internal:5432/magnetiq"
REAL_BROKER_URL = "amqps://magnetiq-worker:Xk3-real-Secret@rabbit.internal:5671/magnetiq"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CELERY_BROKER_URL", "amqps://magnetiq-worker:REPLACE_ME@rabbit.internal:5671/magnetiq"),
        ("CELERY_BROKER_URL", "amqp://magnetiq-producer:magnetiq-producer-dev@rabbitmq:5672/magnetiq"),
        ("DATABASE_URL", "postgresql://magnetiq:REPLACE_ME@postgres.internal:5432/magnetiq"),
        ("DATABASE_URL", "postgresql://magnetiq:magnetiq-dev@postgres:5432/magnetiq"),
        ("CELERY_RESULT_BACKEND", "postgresql://magnetiq:replace_me@postgres.internal:5432/results"),
        ("SMTP_PASSWORD", "REPLACE_ME"),
    ],
)
def test_prod_refuses_every_placeholder_the_manifests_ship(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    # given production with real secrets but for one placeholder (any case)
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv("CELERY_BROKER_URL", REAL_BROKER_URL)
    monkeypatch.setenv("DATABASE_URL", REAL_DATABASE_URL)
    monkeypatch.setenv(variable, value)
    # when the settings are built
    # then they are refused, naming the variable
    with pytest.raises(ValidationError, match=f"{variable} uses a placeholder password"):
        Settings()


@pytest.mark.parametrize("variable", ["DATABASE_URL", "CELERY_RESULT_BACKEND"])
def test_prod_refuses_a_database_url_without_a_password(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # given production whose database URL names no password
    monkeypatch.setenv("MAGNETIQ_ENV", "prod")
    monkeypatch.setenv("CELERY_BROKER_URL", REAL_BROKER_URL)
    monkeypatch.setenv("DATABASE_URL", REAL_DATABASE_URL)
    monkeypatch.setenv(variable, "postgresql://magnetiq@postgres.internal:5432/magnetiq")
    # then the settings are refused
    with pytest.raises(ValidationError, match=f"{variable} has no password"):
        Settings()


def test_dev_allows_guest_broker_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # given development with the default broker credentials
    monkeypatch.setenv("MAGNETIQ_ENV", "dev")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

    # when the settings are built
    # then they load
    assert Settings().celery_broker_url == "amqp://guest:guest@127.0.0.1:5672//"


def test_describe_never_contains_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # given distinctive passwords in every connection setting
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://fleet:BrokerPw-7f3a@rabbit/magnetiq")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:DatabasePw-91c2@db/magnetiq")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "postgresql://res:ResultsPw-5d0e@db/results")
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", "SmtpPw-c4b8")

    # when the settings describe themselves for a log line
    described = repr(Settings().describe())

    # then no password appears, but the hosts do
    for secret in ("BrokerPw-7f3a", "DatabasePw-91c2", "ResultsPw-5d0e", "SmtpPw-c4b8"):
        assert secret not in described
    assert "rabbit" in described
    assert "***" in described


def test_settings_are_frozen() -> None:
    # given built settings
    settings = Settings()

    # when a value is changed
    # then it is refused
    with pytest.raises(ValidationError):
        settings.smtp_port = 2525  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("CELERY_BROKER_URL", "kafka://fleet:LeakedPw-0a9b@kafka.internal:9092/0"),
        ("DATABASE_URL", "mysql://app:LeakedPw-0a9b@db.internal/magnetiq"),
    ],
)
def test_rejected_url_error_does_not_contain_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    # given a rejected URL carrying a real password
    monkeypatch.setenv(variable, url)

    # when the settings are built
    with pytest.raises(ValidationError) as caught:
        Settings()

    # then the error (which ends up in logs) carries no part of the password
    # (pydantic shortens long inputs in the middle, so check a prefix too)
    message = str(caught.value)
    assert "LeakedPw-0a9b" not in message
    assert "LeakedPw" not in message


def test_plain_amqp_has_no_tls_options() -> None:
    assert Settings(celery_broker_url="amqp://u:p@broker:5672/v").broker_ssl is None


def test_amqps_verifies_the_chain_and_the_host_name() -> None:
    # given an amqps:// broker with a CA bundle and a client certificate
    settings = Settings(
        celery_broker_url="amqps://u:p@broker:5671/v",
        broker_tls_ca_file="/etc/ca.pem",
        broker_tls_cert_file="/etc/client.pem",
        broker_tls_key_file="/etc/client.key",
    )
    # then every connection requires a certificate from that CA naming the URL's host
    # (server_hostname None: kombu fills in the host, which turns the name check on)
    assert settings.broker_ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
        "ca_certs": "/etc/ca.pem",
        "certfile": "/etc/client.pem",
        "keyfile": "/etc/client.key",
    }
    assert settings.broker_ssl is not settings.broker_ssl  # kombu writes into it: a new dict each time


@pytest.mark.parametrize(
    ("url", "files", "message"),
    [
        ("amqp://u:p@broker/v", {"broker_tls_ca_file": "/ca.pem"}, "need an amqps://"),
        ("amqps://u:p@broker/v", {"broker_tls_cert_file": "/c.pem"}, "BROKER_TLS_KEY_FILE"),
    ],
)
def test_tls_files_must_make_sense(url: str, files: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(celery_broker_url=url, **files)
