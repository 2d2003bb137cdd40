"""The shared task base: argument validation, bounded retries, failure logging."""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar

from celery import Signature, Task
from celery.result import AsyncResult
from kombu import Producer

from app.contracts import Arguments, InvalidTaskArguments, validate_arguments

log = logging.getLogger(__name__)


class FleetTask(Task[Any, Any]):
    """Base of every fleet task.

    ``arguments`` names the contract model; each call is validated against it
    before the body runs, so a bad payload fails at once (FAILURE, then the
    queue's DLQ through ``task_acks_on_failure=False``) and is never retried.
    """

    #: The pydantic model of the task's arguments (see ``app.contracts``).
    arguments: ClassVar[type[Arguments] | None] = None
    #: Retries are opt-in per task through ``autoretry_for``; these bound them.
    max_retries = 5
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True

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
