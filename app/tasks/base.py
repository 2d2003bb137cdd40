"""The shared task base: argument validation, bounded retries, failure logging."""

from __future__ import annotations

import inspect
import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from celery import Signature, Task, signals
from celery.exceptions import Ignore
from celery.result import AsyncResult
from celery.utils.time import rate
from kombu import Producer

from app import cancellations
from app.contracts import PROGRESS, Arguments, InvalidTaskArguments, validate_arguments
from app.producer import delay_seconds

log = logging.getLogger(__name__)


#: Tasks whose last progress write a process remembers (for the throttle).
PROGRESS_TRACKED = 1000
_progress_written: dict[str, float] = {}


class TaskOptionError(ValueError):
    """A task was registered with an option value it can never use."""


def check_options(name: str, rate_limit: Any = None, result_expires: Any = None) -> None:
    """Check a task's ``rate_limit`` and ``result_expires`` as it is registered.

    ``rate_limit`` is parsed by Celery's own parser (``celery.utils.time.rate``),
    which its worker would otherwise first call at start-up, failing there
    without naming the task.

    Raises:
        TaskOptionError: naming the task, the option and the value.
    """
    try:
        valid = rate(rate_limit) >= 0
    except (ValueError, KeyError, TypeError):  # a bad number, an unknown unit, not a string or number
        valid = False
    if not valid:
        raise TaskOptionError(
            f"{name}: invalid rate_limit {rate_limit!r}: expected Celery's "
            "'<number>/s', '<number>/m' or '<number>/h' (e.g. '10/m')"
        )
    if result_expires is not None and (
        not isinstance(result_expires, int) or isinstance(result_expires, bool) or result_expires <= 0
    ):
        raise TaskOptionError(
            f"{name}: invalid result_expires {result_expires!r}: expected a whole number of seconds > 0"
        )


class FleetTask(Task[Any, Any]):
    """Base of every fleet task.

    ``arguments`` names the contract model; each call is validated against it
    before the body runs, so a bad payload fails at once (FAILURE, then the
    queue's DLQ through ``task_acks_on_failure=False``) and is never retried.

    ``result_expires`` is the fleet's per-task result expiry, honoured by the
    result backend's cleanup. It is not Celery's ``expires``, which is a
    *message* expiry: a message not started by then is revoked unrun.
    """

    #: The pydantic model of the task's arguments (see ``app.contracts``).
    arguments: ClassVar[type[Arguments] | None] = None
    #: Seconds this task's result rows are kept, instead of the app-wide
    #: ``RESULT_EXPIRES`` (shorter or longer); None keeps the app-wide rule.
    result_expires: ClassVar[int | None] = None
    #: Seconds between two progress writes of one task (``report_progress``).
    progress_interval: ClassVar[float] = 1.0
    #: Retries are opt-in per task through ``autoretry_for``; these bound them.
    max_retries = 5
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the options of a task class as Celery registers it (see ``check_options``)."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name") or cls.__qualname__
        check_options(name, cls.rate_limit, cls.result_expires)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Validate the arguments, then run the task body."""
        if self.arguments is not None:
            kwargs = self._validated(args, kwargs)
            args = ()
        return super().__call__(*args, **kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Producer | None = None,
        link: Signature[Any] | list[Signature[Any]] | None = None,
        link_error: Signature[Any] | list[Signature[Any]] | None = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Validate the arguments as the worker will, then publish.

        A seed-style call with arguments the task can never take
        (``process_payment.delay("42")``) raises ``InvalidTaskArguments`` in the
        caller, naming the argument and why, instead of publishing a message the
        worker would only fail and dead-letter. Canvas steps are published when
        their arguments are complete (a chain's next task with its parent's
        result, a chord's body with the header's), so they are checked then too.
        """
        if self.arguments is not None:
            self._validated(tuple(args or ()), dict(kwargs or {}))
        if options.get("countdown") is not None or options.get("eta") is not None:
            delay_seconds(options.get("countdown"), _aware(options.get("eta")))
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)

    def _validated(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        assert self.arguments is not None
        signature = self._run_signature()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidTaskArguments(f"{self.name}: invalid arguments: {exc}") from None
        model = validate_arguments(self.name, self.arguments, dict(bound.arguments))
        return {name: getattr(model, name) for name in type(model).model_fields}

    def _run_signature(self) -> inspect.Signature:
        # inspect.signature() is costly per call: keep it per task body (autoretry
        # may wrap ``run`` once, at bind time, so the cache is keyed by the body).
        body = getattr(self.run, "__func__", self.run)
        cached = self.__dict__.get("_signature_cache")
        if cached is None or cached[0] is not body:
            cached = (body, inspect.signature(self.run))
            self.__dict__["_signature_cache"] = cached
        return cached[1]

    def report_progress(self, done: int, total: int, task_id: str | None = None) -> bool:
        """Store ``PROGRESS`` ``{"done", "total"}`` as the state of ``task_id`` (default: this task).

        ``AsyncResult.info`` and ``magnetiq task show`` read it. Writes are
        throttled to one per ``progress_interval`` seconds per task and process
        (the last, ``done >= total``, always goes), so a task may call it per
        item. A final state is never overwritten. Returns whether it wrote.
        """
        target = task_id or self.request.id
        if target is None:
            return False
        now = time.monotonic()
        last = _progress_written.get(target)
        if done < total and last is not None and now - last < self.progress_interval:
            return False
        if len(_progress_written) >= PROGRESS_TRACKED:
            _progress_written.clear()
        _progress_written[target] = now
        self.backend.store_result(target, {"done": done, "total": total}, PROGRESS)
        return True

    def cancel_requested(self) -> bool:
        """True once the running task was cancelled (``magnetiq task cancel``): one indexed read."""
        return self.request.id is not None and cancellations.cancelled_at(self.request.id) is not None

    def stop_if_cancelled(self) -> None:
        """Stop here if the running task was cancelled: its state becomes REVOKED, its message is acked.

        A long task calls it between steps; the worker terminates a cancelled
        task that has not stopped within ``CANCEL_GRACE_SECONDS``. Each call is
        one read: call it every few seconds of work, not every row.
        """
        task_id = self.request.id
        if task_id is not None and self.cancel_requested():
            log.warning("task %s[%s] stopped: cancelled", self.name, task_id)
            self.backend.mark_as_revoked(task_id, "cancelled", request=self.request)
            signals.task_revoked.send(
                sender=self, request=self.request, terminated=False, signum=None, expired=False
            )
            raise Ignore()

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Log the failure with the task's identity (never its arguments)."""
        log.error(
            "task failed: %s[%s]: %s: %s",
            self.name,
            task_id,
            type(exc).__name__,
            exc,
            extra={"task_name": self.name, "task_id": task_id},
        )


def _aware(eta: Any) -> Any:
    # Celery takes a naive eta as UTC (enable_utc), and an ISO string too.
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if isinstance(eta, datetime) and eta.utcoffset() is None:
        eta = eta.replace(tzinfo=UTC)
    return eta
