"""Bulk publishing for producers that fan out: one channel, streamed publisher confirms.

``enqueue_many`` validates (with the task's own model) and routes every call
first, then publishes the messages ``send_task`` would, as ``app.producer.send``
does for one: nothing declared, ``mandatory``, confirmed; it names every task
the broker did not confirm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from struct import pack
from typing import Any, NamedTuple

import amqp
from amqp import spec
from amqp.exceptions import AMQPError
from amqp.serialization import dumps as amqp_dumps
from celery import signals
from celery.exceptions import QueueNotFound
from celery.result import AsyncResult
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu import Connection, Exchange, Queue
from kombu.exceptions import KombuError
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid

from app import contracts
from app.celery_app import celery_app
from app.settings import get_settings

#: AMQP delivery mode of a message the broker keeps on disk.
PERSISTENT = 2
#: Property flags: content_type, content_encoding, headers, delivery_mode, priority, correlation_id, reply_to.
_FLAGS = 0xFE00
_MISSING = object()  # stands for a header the template lacks
#: Types whose ``repr`` equals Celery's ``saferepr`` (strings are checked apart).
_PLAIN_SCALARS = (type(None), bool, int, float)
_QUOTES = frozenset("'\"\\")  # characters saferepr and repr escape differently
#: A body's ``embed`` part without callbacks, errbacks, chain or chord; then as kombu's json ends a body.
_NO_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMBED = b', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


#: A publish's outcome: not sent or not confirmed yet, confirmed, refused (e.g. reject-publish), unroutable.
PENDING, ACKED, NACKED, RETURNED = range(4)
#: How PublishError names each kind of unconfirmed task.
_LABELS = {NACKED: "nacked by the broker", RETURNED: "unroutable (not queued)"}


class PublishError(Exception):
    """The broker did not confirm some tasks of a bulk publish.

    Attributes:
        reason: why publishing stopped (refusal, timeout, connection failure).
        confirmed: call index -> task id of each task the broker confirmed.
        unconfirmed: call index -> task id of every other task (the message says why).
    """

    def __init__(self, task_name: str, reason: str, tracker: ConfirmTracker) -> None:
        self.reason = reason
        outcomes, task_ids = tracker.outcomes, tracker.task_ids
        self.confirmed = {i: task_id for i, task_id in enumerate(task_ids) if outcomes[i] == ACKED}
        self.unconfirmed = {i: task_id for i, task_id in enumerate(task_ids) if outcomes[i] != ACKED}
        groups: dict[str, list[str]] = {}
        for i, task_id in self.unconfirmed.items():
            pending = "no confirm (may be queued)" if i < tracker.published else "not published"
            groups.setdefault(_LABELS.get(outcomes[i], pending), []).append(f"#{i} {task_id}")
        details = "; ".join(f"{label}: {', '.join(items)}" for label, items in groups.items())
        count = f"{len(self.unconfirmed)} of {len(task_ids)}"
        super().__init__(f"{task_name}: {count} tasks not confirmed ({reason}); {details}")


class ConfirmTracker:
    """The outcome of each publish on a fresh confirm-mode channel, where call ``i`` gets tag ``i + 1``."""

    def __init__(self, task_ids: Sequence[str]) -> None:
        self.task_ids = task_ids
        self.outcomes = bytearray(len(task_ids))
        self.published = self.settled = self.failed = 0
        self._floor = 1
        self._index_of: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acked, nacked or returned."""
        return self.published - self.settled

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        """Record a ``basic.ack`` (a py-amqp channel event callback)."""
        self._settle(delivery_tag, multiple, ACKED)

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        """Record a ``basic.nack`` (a py-amqp channel event callback)."""
        self._settle(delivery_tag, multiple, NACKED)

    def on_return(self, exc: Exception, exchange: str, routing_key: str, message: amqp.Message) -> None:
        """Record an unroutable message sent back (``basic.return``); the ack that follows is ignored."""
        if not self._index_of:
            self._index_of = {task_id: i for i, task_id in enumerate(self.task_ids)}
        index = self._index_of.get((message.headers or {}).get("id", ""))
        if index is not None:
            self._settle(index + 1, False, RETURNED)

    def _settle(self, tag: int, multiple: bool, outcome: int) -> None:
        # A multiple confirm covers every tag up to its own; the floor (all below
        # it settled) keeps the work per tag constant.
        outcomes = self.outcomes
        for current in range(self._floor if multiple else tag, min(tag, self.published) + 1):
            if outcomes[current - 1] == PENDING:
                outcomes[current - 1] = outcome
                self.settled += 1
                self.failed += outcome != ACKED
        while self._floor <= self.published and outcomes[self._floor - 1]:
            self._floor += 1


def validate_calls(
    task_name: str, calls: Iterable[Mapping[str, Any]], model: type[contracts.Arguments] | None
) -> list[dict[str, Any]]:
    """Return each call's kwargs, validated against ``model`` and dumped as JSON types if given.

    A bad call raises ``contracts.InvalidTaskArguments`` naming its index.
    """
    if model is None:
        return [dict(call) for call in calls]
    validated = []
    for index, call in enumerate(calls):
        try:
            arguments = contracts.validate_arguments(task_name, model, dict(call))
        except contracts.InvalidTaskArguments as exc:
            raise type(exc)(f"call #{index}: {exc}") from None  # keeps PayloadTooLarge apart
        validated.append(arguments.model_dump(mode="json", exclude_none=True))
    return validated


class Destination(NamedTuple):
    """Where a message goes: exchange name, routing key, and the queue it is routed to."""

    exchange: str
    routing_key: str
    queue: Queue | None

    @classmethod
    def from_route(cls, route: Mapping[str, Any]) -> Destination:
        """Resolve a router's answer as Celery's ``send_task_message`` does."""
        queue, exchange, routing_key = route.get("queue"), route.get("exchange"), route.get("routing_key")
        exchange_type = route.get("exchange_type") or (queue.exchange.type if queue else "direct")
        if queue is not None and exchange_type == "direct" and not (exchange and routing_key):
            return cls("", queue.name, queue)  # the default exchange, straight to the queue
        if exchange is None and queue is not None:
            exchange = queue.exchange.name or celery_app.amqp.default_exchange
            routing_key = routing_key or queue.routing_key
        name = exchange.name if isinstance(exchange, Exchange) else str(exchange or "")
        return cls(name, routing_key or celery_app.conf.task_default_routing_key, queue)


def route_calls(task_name: str, calls: Sequence[dict[str, Any]]) -> list[Destination]:
    """Route each call with the app's router; raise QueueNotFound if a call has no route or queue.

    ``send_task`` would send an unrouted task to the default queue; here it is an error.
    """
    router = celery_app.amqp.router
    known: dict[Destination, Destination] = {}
    destinations = []
    for kwargs in calls:
        route = router.lookup_route(task_name, (), kwargs, {}, None)
        if route is None:
            raise QueueNotFound(f"no route for task {task_name!r}; nothing was published")
        destination = Destination.from_route(router.expand_destination(route))
        destinations.append(known.setdefault(destination, destination))
    return destinations


def kwargs_repr(kwargs: Mapping[str, Any], maxsize: int) -> str:
    """Return Celery's ``kwargsrepr`` header, ``saferepr(kwargs, maxsize)``, without its walk.

    For a short flat dict of plain scalars and printable strings without quotes or backslashes,
    ``saferepr`` equals ``repr``; ``tests/unit/test_publisher.py`` checks that they agree.
    """
    if type(kwargs) is dict:
        for key, value in kwargs.items():
            if not (_plain_text(key) and (type(value) in _PLAIN_SCALARS or _plain_text(value))):
                break
        else:
            text = repr(kwargs)
            if len(text) < maxsize:
                return text
    return saferepr(kwargs, maxsize, maxlevels=celery_app.conf.task_repr_maxlevels)


def _plain_text(value: object) -> bool:
    return type(value) is str and value.isprintable() and not _QUOTES.intersection(value)


def header_template(task_name: str, group_id: str | None = None) -> dict[str, Any]:
    """Return the protocol-2 headers every message of ``task_name`` shares (as ``AMQP.as_task_v2``)."""
    parent = celery_app.current_worker_task  # called in a task: link to it, as send_task does
    request = parent.request if parent else None
    return {
        "lang": "py", "task": task_name, "shadow": None, "eta": None, "expires": None, "group": group_id,
        "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": request and (request.root_id or request.id), "parent_id": request and request.id,
        "argsrepr": saferepr((), celery_app.amqp.argsrepr_maxsize), "origin": anon_nodename(),
        "ignore_result": None,  # what send_task sends for a task not registered in this process
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }  # fmt: skip


def task_headers(
    template: Mapping[str, Any], task_id: str, kwargsrepr: str, sent: float, group_index: int | None = None
) -> dict[str, Any]:
    """Return one message's headers: the template plus its ids, ``kwargsrepr``, ``sent_at``, group index."""
    headers = {**template, "timelimit": [None, None], "stamps": {}}  # fresh: receivers may edit them
    headers.update(id=task_id, root_id=template["root_id"] or task_id, kwargsrepr=kwargsrepr, sent_at=sent)
    if template["group"] is not None:
        headers["group_index"] = group_index
    return headers


def task_body(kwargs: Mapping[str, Any]) -> bytes:
    """Return the protocol-2 body ``[args, kwargs, embed]`` as kombu's json writes it."""
    return b"".join((b"[[], ", dumps(kwargs).encode(), _EMBED))


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return pack(">B", len(data)) + data


def _field(key: str, value: Any) -> bytes:
    """Encode one header-table entry exactly as py-amqp's ``_write_table`` does."""
    if type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
        return _shortstr(key) + pack(">cI", b"S", len(data)) + data
    if type(value) is float:
        return _shortstr(key) + pack(">cd", b"d", value)
    return amqp_dumps("F", ({key: value},))[4:]  # py-amqp itself, minus the table length


class PropertiesEncoder:
    """Serializes a task message's AMQP properties byte for byte as py-amqp does, encoding less.

    py-amqp encodes all ~20 headers of each message. A header still holding the template's
    value (the same object, or an equal one of its type: str, int, None, ``[None, None]``, ``{}``)
    reuses bytes encoded once.
    """

    def __init__(self, template: Mapping[str, Any], reply_to: str) -> None:
        self._template = dict(template)
        self._encoded = {key: _field(key, value) for key, value in template.items()}
        self._head = pack(">H", _FLAGS) + _shortstr("application/json") + _shortstr("utf-8")
        self._reply_to = _shortstr(reply_to)

    def encode(self, headers: Mapping[str, Any], correlation_id: str) -> bytes:
        """Return the properties of a persistent JSON message with ``headers``."""
        template, encoded, parts = self._template, self._encoded, []
        for key, value in headers.items():
            known = template.get(key, _MISSING)
            same = value is known or (type(value) is type(known) and value == known)
            parts.append(encoded[key] if same else _field(key, value))
        table = b"".join(parts)
        tail = (pack(">BB", PERSISTENT, 0), _shortstr(correlation_id), self._reply_to)
        return b"".join((self._head, pack(">I", len(table)), table, *tail))


class _Encoded(amqp.Message):
    """A message whose properties were serialized before py-amqp's frame writer asks."""

    def __init__(self, body: bytes, properties: bytes) -> None:
        super().__init__(body)
        self._properties = properties

    def _serialize_properties(self) -> bytes:
        return self._properties


def message_builder(
    task_name: str, group_id: str | None = None
) -> Callable[[int, str, dict[str, Any], Destination], amqp.Message]:
    """Return a function building call ``i``'s message and firing the publish signals, as ``send_task``."""
    template, reply_to = header_template(task_name, group_id), celery_app.thread_oid
    encoder, maxsize = PropertiesEncoder(template, reply_to), celery_app.amqp.kwargsrepr_maxsize
    before, after = signals.before_task_publish, signals.after_task_publish

    def build(index: int, task_id: str, kwargs: dict[str, Any], to: Destination) -> amqp.Message:
        headers = task_headers(template, task_id, kwargs_repr(kwargs, maxsize), time.time(), index)
        properties = {"correlation_id": task_id, "reply_to": reply_to}
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        body = ((), kwargs, embed)
        if before.receivers:  # e.g. app.celery_app.stamp_sent_at; they may edit all three
            before.send(sender=task_name, body=body, exchange=to.exchange, routing_key=to.routing_key,
                        declare=[], headers=headers, properties=properties,
                        retry_policy=None)  # fmt: skip
        if properties == {"correlation_id": task_id, "reply_to": reply_to} and embed == _NO_EMBED:
            message: amqp.Message = _Encoded(task_body(kwargs), encoder.encode(headers, task_id))
        else:  # beyond what the fast encoders cover: kombu's json and py-amqp encode it all
            fixed = {"content_type": "application/json", "content_encoding": "utf-8", "priority": 0}
            options = {**fixed, **properties, "application_headers": headers, "delivery_mode": PERSISTENT}
            message = amqp.Message(dumps(body).encode(), **options)
        if after.receivers:
            after.send(sender=task_name, body=body, exchange=to.exchange, routing_key=to.routing_key)
        return message

    return build


#: One task to publish: its id, keyword arguments and destination.
_Job = tuple[str, dict[str, Any], Destination]


def _wait(connection: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Read frames (confirms) until ``done()`` or ``timeout`` seconds pass; return ``done()``."""
    deadline = time.monotonic() + timeout
    while not done() and (remaining := deadline - time.monotonic()) > 0:
        with suppress(TimeoutError):  # socket.timeout: the loop checks the deadline
            connection.drain_events(timeout=remaining)
    return done()


def _stream(
    conn: Connection,
    task_name: str,
    jobs: list[_Job],
    tracker: ConfirmTracker,
    window: int,
    timeout: float,
    group_id: str | None,
) -> str | None:
    """Publish the jobs, stopping at the first refusal; return why it failed, or None.

    Nothing is declared (workers and ``magnetiq topology apply`` own the topology,
    so the producer account's write permission suffices); ``mandatory`` turns a
    task no queue is bound for into a named failure.
    """
    channel: Any = conn.channel()  # py-amqp's channel (the kombu stubs lack ``events``)
    channel.events["basic_ack"].add(tracker.on_ack)
    channel.events["basic_nack"].add(tracker.on_nack)
    channel.events["basic_return"].add(tracker.on_return)
    channel.confirm_select()
    # basic_publish minus its drain_events(timeout=0) per message; _wait reads confirms.
    # Why: tests/bench/README.md, "Bulk publish".
    publish = partial(channel.send_method, spec.Basic.Publish, "Bssbb")
    build = message_builder(task_name, group_id)
    for index, (task_id, kwargs, to) in enumerate(jobs):
        if tracker.in_flight >= window and not _wait(
            conn.connection, lambda: tracker.in_flight < window, timeout
        ):
            return f"no confirm within {timeout}s"
        if tracker.failed:
            break
        publish((0, to.exchange, to.routing_key, True, False), build(index, task_id, kwargs, to))  # mandatory
        tracker.published += 1
    if not _wait(conn.connection, lambda: tracker.in_flight == 0, timeout):
        return f"no confirm within {timeout}s"
    return f"the broker refused {tracker.failed} publishes" if tracker.failed else None


def _publish(
    task_name: str,
    jobs: list[_Job],
    tracker: ConfirmTracker,
    window: int,
    timeout: float,
    group_id: str | None,
) -> None:
    """Publish on a fresh connection without kombu's one-at-a-time confirms."""
    if get_settings().broker == "redis":
        _publish_redis(task_name, jobs, tracker, timeout, group_id)
        return
    connection = celery_app.connection_for_write(
        transport_options={"confirm_publish": False, "read_timeout": timeout, "write_timeout": timeout}
    )
    try:
        connection.connect()
        reason = _stream(connection, task_name, jobs, tracker, window, timeout, group_id)
    except (AMQPError, KombuError, OSError) as exc:
        reason = f"publishing failed: {exc!r}"
    try:
        connection.release()
    except (AMQPError, KombuError, OSError):
        connection.collect()  # already broken: drop the socket
    if reason is not None:
        raise PublishError(task_name, reason, tracker)


def enqueue_many(
    task_name: str,
    calls: Iterable[Mapping[str, Any]],
    *,
    model: type[contracts.Arguments] | None = None,
    window: int = 1000,
    timeout: float = 30.0,
    group_id: str | None = None,
) -> list[AsyncResult[Any]]:
    """Publish one ``task_name`` task per call; return once the broker confirmed every one.

    Nothing is sent before every call is validated (with ``model``) and routed.
    Publishing stops at the first nack; the tasks already confirmed stay queued.

    Args:
        task_name: the task's dotted name (a ``contracts`` constant).
        calls: one keyword-arguments mapping per task.
        model: the model to validate each call with; None: the task's own
            (``contracts.ARGUMENT_MODELS``), and none for a task the fleet does not define.
        window: most messages published and not yet confirmed.
        timeout: seconds each wait for confirms (window full, or at the end) may
            last; also bounds each socket read and write.
        group_id: publish the tasks as one group (Celery's ``group`` header and
            ``group_index``), as ``group(...).apply_async()`` does.

    Returns:
        One result per call, in call order.

    Raises:
        contracts.InvalidTaskArguments: a call is invalid (its index is named).
        QueueNotFound: the task has no route.
        PublishError: tasks were nacked, unroutable, not confirmed in time, or the
            connection failed; it names every unconfirmed task id and call index.
    """
    if window < 1 or timeout <= 0:
        raise ValueError(f"window must be >= 1 and timeout > 0, not {window} and {timeout}")
    kwargs = validate_calls(task_name, calls, model or contracts.ARGUMENT_MODELS.get(task_name))
    task_ids = [uuid() for _ in kwargs]
    jobs = list(zip(task_ids, kwargs, route_calls(task_name, kwargs), strict=True))
    if jobs:
        _publish(task_name, jobs, ConfirmTracker(task_ids), window, timeout, group_id)
    result_cls, backend = celery_app.AsyncResult, celery_app.backend
    return [result_cls(task_id, backend=backend) for task_id in task_ids]


def _publish_redis(
    task_name: str, jobs: list[_Job], tracker: ConfirmTracker, timeout: float, group_id: str | None
) -> None:
    """Publish through Celery on a Redis broker, one write each: Redis answers every one.

    Redis has no publisher confirms and no ``mandatory`` flag: the reply to the
    write is the confirmation, and the fleet's Redis transport raises
    ``Unroutable`` where no queue is bound. Publishing stops at the first failure.
    """
    reason = None
    with celery_app.producer_or_acquire() as producer:
        for index, (task_id, kwargs, to) in enumerate(jobs):
            try:
                celery_app.send_task(
                    task_name,
                    kwargs=kwargs,
                    task_id=task_id,
                    producer=producer,
                    exchange=to.exchange,
                    routing_key=to.routing_key,
                    declare=[],
                    group_id=group_id,
                    group_index=index if group_id is not None else None,
                    timeout=timeout,
                    retry=False,
                )
            except (KombuError, OSError) as exc:
                reason = f"publishing failed: {exc!r}"
                break
            tracker.published += 1
            tracker.on_ack(tracker.published, False)
    if reason is not None:
        raise PublishError(task_name, reason, tracker)
