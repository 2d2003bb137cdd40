"""Settings: the only place environment variables are read."""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Passwords that must never reach production (compared case-insensitively): the
#: usual defaults, the manifests' REPLACE_ME and the compose file's dev passwords.
PLACEHOLDER_SECRETS = frozenset(
    {
        "guest",
        "changeme",
        "change-me",
        "password",
        "secret",
        "replace_me",
        "replace-me",
        "magnetiq-dev",
        "magnetiq-producer-dev",
        "magnetiq-worker-dev",
        "magnetiq-monitoring-dev",
    }
)


#: The brokers the fleet runs on.
BrokerKind = Literal["amqp", "redis"]
#: Broker URL schemes, by broker (kombu's spellings).
BROKER_SCHEMES: dict[str, BrokerKind] = {
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
}
#: Broker URL prefixes that speak TLS.
TLS_SCHEMES = ("amqps://", "rediss://")
#: Result backend URLs Celery's Redis backend takes (``CELERY_RESULT_BACKEND``).
REDIS_RESULT_SCHEMES = ("redis://", "rediss://")


def broker_scheme(url: str) -> str | None:
    """A broker URL's scheme (``redis``), or None without one.

    A kombu failover list (``;``-separated) names one broker: its first URL's.
    """
    scheme, sep, _ = url.split(";", 1)[0].strip().partition("://")
    return scheme if sep else None


def broker_kind(url: str) -> BrokerKind | None:
    """The broker a URL names, or None for a scheme the fleet does not run on."""
    return BROKER_SCHEMES.get(broker_scheme(url) or "")


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for logs and errors.

    A kombu failover list (``;``-separated) has each of its URLs masked.
    """
    if ";" in url:
        return ";".join(mask_url(one) for one in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def sqlalchemy_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the psycopg2 driver SQLAlchemy should use.

    Accepts ``postgresql://``, ``postgres://``, ``postgresql+psycopg2://`` and
    Celery's ``db+postgresql://`` spellings. SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which the fleet does not install.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {mask_url(url)!r}")
    scheme = scheme.removeprefix("db+")
    if scheme in {"postgres", "postgresql", "postgresql+psycopg2"}:
        return f"postgresql+psycopg2://{rest}"
    raise ValueError(f"expected a postgresql:// URL, got scheme {scheme!r}")


class Settings(BaseSettings):
    """Typed, frozen view of the environment (12-factor; loopback defaults)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    #: ``dev`` allows placeholder secrets; ``prod`` refuses them.
    magnetiq_env: Literal["dev", "test", "prod"] = "dev"

    #: RabbitMQ (``amqp://``, ``amqps://``: recommended) or Redis (``redis://``,
    #: ``rediss://``, ``sentinel://`` as kombu spells them; see ``broker_kind``).
    celery_broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    #: With an ``amqps://`` or ``rediss://`` broker: the CA bundle (PEM) the broker's
    #: certificate must chain to (unset: the system store or ``SSL_CERT_FILE``), and
    #: an optional client certificate and key (PEM) for brokers that ask for one.
    broker_tls_ca_file: str | None = None
    broker_tls_cert_file: str | None = None
    broker_tls_key_file: str | None = None
    database_url: str = "postgresql://postgres@127.0.0.1:5432/magnetiq"
    #: Defaults to ``database_url``; a ``redis://`` or ``rediss://`` URL stores results
    #: with Celery's Redis backend instead (``app.redis_results``).
    celery_result_backend: str | None = None
    #: RabbitMQ management API for ``magnetiq status`` (unacked counts); unset: the broker's host, port 15672.
    rabbitmq_management_url: str | None = None

    #: Unset means "no real server": the local sink on 127.0.0.1 (``magnetiq run`` starts one).
    smtp_host: str | None = None
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0)
    #: Open SMTP connections per worker process at most (the provider's connection cap).
    smtp_max_connections: int = Field(default=100, ge=1)
    #: Emails per second one worker process starts at most; 0 means no limit.
    smtp_rate_limit: float = Field(default=0.0, ge=0)
    #: Emails per second all email workers together start at most (``app.mail.throttle``); 0: no limit.
    smtp_fleet_rate_limit: float = Field(default=0.0, ge=0)
    #: Emails per second to one recipient domain, all email workers together; 0: no limit.
    smtp_domain_rate_limit: float = Field(default=0.0, ge=0)
    #: PostgreSQL the two limits above are shared through (default: ``DATABASE_URL``).
    smtp_rate_store_url: str | None = None
    #: Retries of an email after a transient failure (4xx, timeout, connection error).
    email_max_retries: int = Field(default=5, ge=0, le=20)
    mail_from: str = "Magnetiq <no-reply@magnetiq.local>"

    #: Port of a worker's ``/metrics`` endpoint; 0 turns metrics off (endpoint and counting).
    #: Each worker on a machine needs its own port (on Kubernetes: one worker per pod).
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    #: Address the ``/metrics`` endpoint listens on: every interface, so Prometheus can scrape the pod.
    metrics_host: str = "0.0.0.0"
    #: Base directory of prefork workers' multiprocess metric files, one ``<profile>-<pid>``
    #: directory per worker (default ``<tempdir>/magnetiq-metrics``; a tmpfs suits it best).
    metrics_dir: str | None = None

    #: Directory of the liveness and readiness files (``workers.health``).
    health_dir: str | None = None

    #: Base URL of the payment provider's API; unset means no charge can be made.
    payment_provider_url: str | None = None
    #: Seconds for connecting to the payment provider and for each reply.
    payment_provider_timeout: float = Field(default=10.0, gt=0)
    #: Directory the per-resource iCalendar feeds are written to.
    calendar_export_dir: str = "var/calendars"
    #: Valid rows of a booking import booked per chunk task.
    booking_import_chunk_size: int = Field(default=200, gt=0)
    #: Minutes a pending booking is held unpaid before ``expire-pending-bookings`` expires it.
    booking_hold_minutes: int = Field(default=30, gt=0)

    #: Worker and beat log level.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Celery's line per task received, succeeded and retried (INFO). Off by default:
    #: they cost a prefork booking worker about 10-15 % of its throughput, and the
    #: metrics count the same events. Failures and retries are logged either way.
    log_each_task: bool = False
    #: Seconds a beat replica's leader lease lasts; the leader renews it every third of that,
    #: and a standby takes over at most this long (plus a third) after the leader died.
    beat_lease_seconds: float = Field(default=30.0, gt=0)
    #: The periodic jobs, as ``module:NAME`` of a sequence of ``app.maintenance.schedule.Job``.
    maintenance_schedule: str = "app.maintenance.schedule:SCHEDULE"

    #: ``false`` lets result writes return before PostgreSQL flushes them to
    #: disk: about 2.5x faster, and a database crash may lose the last fraction
    #: of a second of result rows (never domain data, which commits normally).
    result_synchronous_commit: bool = True
    #: Workers send task events from the start. Off by default: events cost
    #: about a third of a prefork worker's throughput, and Flower turns them on
    #: by broadcast while it runs (its ``--enable_events``, on by default).
    worker_task_events: bool = False
    #: Seconds a stored result lives before expiry cleanup deletes it.
    result_expires: int = Field(default=7 * 24 * 3600, gt=0)
    #: Store each result with its task's name, arguments, worker, retries and
    #: queue (Celery's ``result_extended``), arguments a contract marks secret
    #: redacted. Off by default: arguments may carry personal data.
    result_extended: bool = False
    #: On a Redis broker: the furthest ahead a task may be delayed (``countdown``/``eta``,
    #: seconds). A worker holds a delayed task unacked until it runs, so the broker's
    #: visibility timeout must outlast it (``workers.profiles.redis_visibility_timeout``).
    redis_eta_horizon: int = Field(default=3600, gt=0)
    #: Seconds a soft time limit gives a prefork task before it must stop.
    task_soft_time_limit: int = Field(default=120, gt=0)
    #: Seconds after which a prefork task's process is killed.
    task_time_limit: int = Field(default=150, gt=0)
    #: MiB a worker process may hold resident before it restarts itself warm, in place
    #: (``workers.memory``): the gevent email worker, a prefork worker's main process. 0: never.
    worker_max_memory_mib: int = Field(default=512, ge=0)
    #: Seconds a running task that was cancelled (``magnetiq task cancel``) has to
    #: return (``FleetTask.stop_if_cancelled``) before the worker terminates it.
    cancel_grace_seconds: float = Field(default=30.0, ge=0)

    #: Message signing (Celery's ``auth`` serializer): this process's private key
    #: (PEM file), its certificate, and the trusted certificates of every signer
    #: (a directory or glob). All three set turns signing on: messages are signed
    #: and only signed messages from a trusted certificate are accepted.
    task_signing_key: str | None = None
    task_signing_cert: str | None = None
    task_signing_cert_store: str | None = None

    @field_validator("celery_broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if broker_kind(value) is None:
            raise ValueError(
                "CELERY_BROKER_URL must be amqp://, amqps://, redis://, rediss:// or sentinel://, "
                f"got {mask_url(value)!r}"
            )
        return value

    @field_validator("database_url", "smtp_rate_store_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        return None if value is None else sqlalchemy_url(value)

    @field_validator("celery_result_backend")
    @classmethod
    def _postgres_or_redis(cls, value: str | None) -> str | None:
        if value is None or value.startswith(REDIS_RESULT_SCHEMES):
            return value
        try:
            return sqlalchemy_url(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, or a redis:// or rediss:// URL") from None

    @model_validator(mode="after")
    def _limits_and_secrets(self) -> Settings:
        tls_files = (self.broker_tls_ca_file, self.broker_tls_cert_file, self.broker_tls_key_file)
        if any(tls_files) and not self.celery_broker_url.startswith(TLS_SCHEMES):
            raise ValueError("BROKER_TLS_* need an amqps:// or rediss:// CELERY_BROKER_URL")
        if bool(self.broker_tls_cert_file) != bool(self.broker_tls_key_file):
            raise ValueError("set both BROKER_TLS_CERT_FILE and BROKER_TLS_KEY_FILE, or neither")
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT")
        signing = (self.task_signing_key, self.task_signing_cert, self.task_signing_cert_store)
        if any(signing) and not all(signing):
            raise ValueError(
                "set all of TASK_SIGNING_KEY, TASK_SIGNING_CERT, TASK_SIGNING_CERT_STORE, or none"
            )
        if self.magnetiq_env == "prod":
            self._refuse_placeholders()
        return self

    def _refuse_placeholders(self) -> None:
        """Refuse a placeholder password anywhere, and a database URL without one (prod only)."""
        secrets = [
            *(("CELERY_BROKER_URL", urlsplit(url).password) for url in self.celery_broker_url.split(";")),
            ("DATABASE_URL", urlsplit(self.database_url).password),
            ("CELERY_RESULT_BACKEND", urlsplit(self.result_backend_url).password),
            ("SMTP_RATE_STORE_URL", urlsplit(self.smtp_rate_store_url or self.database_url).password),
            ("SMTP_PASSWORD", self.smtp_password.get_secret_value() if self.smtp_password else None),
        ]
        for name, secret in secrets:
            if not secret and name in {"DATABASE_URL", "CELERY_RESULT_BACKEND", "SMTP_RATE_STORE_URL"}:
                raise ValueError(f"{name} has no password; set a real secret in prod")
            if secret is not None and secret.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name} uses a placeholder password; set a real secret in prod")

    @property
    def smtp_server(self) -> str:
        """The SMTP host to connect to (the local sink when ``SMTP_HOST`` is unset)."""
        return self.smtp_host or "127.0.0.1"

    @property
    def broker_ssl(self) -> dict[str, Any] | None:
        """TLS options for every broker connection (Celery's ``broker_use_ssl``, kombu's ``ssl``).

        None for ``amqp://``. For ``amqps://`` the broker's certificate must chain
        to ``BROKER_TLS_CA_FILE`` (else the system store) and name the URL's host:
        ``server_hostname=None`` makes kombu fill in that host, which turns the
        hostname check on (py-amqp checks only the chain without it). A new dict
        each call, since kombu writes the host into it.
        """
        if self.celery_broker_url.startswith("rediss://"):
            return self._redis_ssl()
        if not self.celery_broker_url.startswith("amqps://"):
            return None
        options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
        if self.broker_tls_ca_file:
            options["ca_certs"] = self.broker_tls_ca_file
        if self.broker_tls_cert_file:
            options["certfile"] = self.broker_tls_cert_file
            options["keyfile"] = self.broker_tls_key_file
        return options

    def _redis_ssl(self) -> dict[str, Any]:
        # redis-py's names for the same options; the host name is checked too.
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
        if self.broker_tls_ca_file:
            options["ssl_ca_certs"] = self.broker_tls_ca_file
        if self.broker_tls_cert_file:
            options["ssl_certfile"] = self.broker_tls_cert_file
            options["ssl_keyfile"] = self.broker_tls_key_file
        return options

    @property
    def broker(self) -> BrokerKind:
        """Which broker ``CELERY_BROKER_URL`` names: ``amqp`` (RabbitMQ) or ``redis``."""
        kind = broker_kind(self.celery_broker_url)
        assert kind is not None  # the validator refused anything else
        return kind

    @property
    def signing(self) -> bool:
        """Whether task messages are signed (``auth`` serializer)."""
        return self.task_signing_key is not None

    @property
    def result_backend_url(self) -> str:
        """The URL results are stored in: PostgreSQL (by default the domain database) or Redis."""
        return self.celery_result_backend or self.database_url

    @property
    def results_in_redis(self) -> bool:
        """Whether results are stored with Celery's Redis backend rather than in PostgreSQL."""
        return self.result_backend_url.startswith(REDIS_RESULT_SCHEMES)

    def describe(self) -> dict[str, str]:
        """Return the connection settings with every secret masked, for logs."""
        return {
            "broker": mask_url(self.celery_broker_url),
            "database": mask_url(self.database_url),
            "results": mask_url(self.result_backend_url),
            "smtp": f"{self.smtp_server}:{self.smtp_port}",
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process from the environment."""
    return Settings()
