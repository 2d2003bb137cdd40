"""Unit tests of app.publisher's pure parts: encoders, confirm bookkeeping, validation, routing."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import amqp
import pytest
from amqp.serialization import decode_properties_basic
from celery import Celery, signals
from celery._state import _task_stack
from celery.exceptions import QueueNotFound
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu import Exchange, Queue
from kombu.utils.json import dumps

from app import contracts, publisher
from app.celery_app import celery_app
from routing import names, routes

TASK_ID = "0b6f6a4e-5d1c-4f3e-9a57-5f2f1e2d3c4b"
EMAIL = {"user_email": "ada@example.com", "user_name": "Ada Lovelace"}
TO_EMAIL = publisher.Destination(names.TASKS_EXCHANGE, "email.send_welcome_email", None)
#: A value no error should echo: it stands for personal data.
DISTINCTIVE = "Zq7-personal-data-9Xw"


def decoded(properties: bytes) -> dict[str, Any]:
    """Decode content-header property bytes the way a consumer's py-amqp does."""
    return dict(decode_properties_basic(properties, 0)[0])


def reference_properties(headers: dict[str, Any], task_id: str = TASK_ID) -> bytes:
    """The property bytes py-amqp itself writes for a persistent JSON task message."""
    message = amqp.Message(
        b"",
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
        priority=0,
        correlation_id=task_id,
        reply_to=celery_app.thread_oid,
    )
    return bytes(message._serialize_properties())


# --- kwargs_repr ------------------------------------------------------------------------------------


def sample_values(rng: random.Random) -> Iterator[Any]:
    alphabet = "abc XYZ 09 é漢 '\"\\\n\t@.-_"
    for _ in range(400):
        kind = rng.randrange(7)
        if kind == 0:
            yield "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        elif kind == 1:
            yield rng.randrange(-(10**20), 10**20)
        elif kind == 2:
            yield rng.random() * 10 ** rng.randrange(-5, 20)
        elif kind == 3:
            yield rng.choice([True, False, None])
        elif kind == 4:
            yield [rng.randrange(10), "x'y", None]
        elif kind == 5:
            yield {"nested": {"deeper": {"deepest": [1]}}}
        else:
            yield "y" * rng.randrange(900, 1100)


@pytest.mark.parametrize("seed", range(5))
def test_kwargs_repr_equals_celery_saferepr(seed: int) -> None:
    # given many argument dicts: plain, quoted, escaped, nested, long and near the size limit
    rng = random.Random(seed)
    values = list(sample_values(rng))
    samples = [{f"k{i}": value} for i, value in enumerate(values)]
    samples += [dict(zip(("a", "b", "c"), rng.sample(values, 3), strict=True)) for _ in range(200)]
    samples += [{}, {"it's": 1}, {"é": "漢字"}, {"x": "z" * 1013}, {"x": "z" * 1014}, {"x": "z" * 1015}]

    # when each is turned into Celery's kwargsrepr header
    # then the fast path gives exactly what saferepr gives
    for kwargs in samples:
        assert publisher.kwargs_repr(kwargs, 1024) == saferepr(kwargs, 1024, maxlevels=3), kwargs


def test_kwargs_repr_handles_mappings_that_are_not_plain_dicts() -> None:
    kwargs = OrderedDict(a=1)
    assert publisher.kwargs_repr(kwargs, 1024) == saferepr(kwargs, 1024, maxlevels=3)


# --- message encoding ---------------------------------------------------------------------------------


def test_header_template_matches_send_task_headers() -> None:
    # given the headers Celery's own as_task_v2 builds for a by-name send
    message = celery_app.amqp.as_task_v2(
        TASK_ID, contracts.SEND_WELCOME_EMAIL, (), EMAIL, ignore_result=None, reply_to=celery_app.thread_oid
    )

    # when the bulk publisher builds the headers of the same task
    template = publisher.header_template(contracts.SEND_WELCOME_EMAIL)
    headers = publisher.task_headers(template, TASK_ID, publisher.kwargs_repr(EMAIL, 1024), 12.5)

    # then they are Celery's, plus sent_at
    assert headers == {**message.headers, "sent_at": 12.5}
    assert headers["origin"] == anon_nodename()


def test_tasks_published_from_a_running_task_are_linked_to_it() -> None:
    # given a task a worker is running (as Celery's tracer pushes it)
    other = Celery("unit-parent", set_as_current=False)

    @other.task(name="unit.parent", shared=False)
    def parent() -> None: ...

    parent.push_request(id="parent-id", root_id="root-id", called_directly=False)
    _task_stack.push(parent)
    try:
        # when it publishes in bulk
        template = publisher.header_template(contracts.SEND_WELCOME_EMAIL)
    finally:
        _task_stack.pop()
        parent.pop_request()

    # then each child names its parent and root, as send_task would
    headers = publisher.task_headers(template, TASK_ID, "{}", 1.0)
    assert (headers["parent_id"], headers["root_id"]) == ("parent-id", "root-id")


def test_task_body_is_what_kombu_json_writes() -> None:
    for kwargs in (EMAIL, {}, {"payment_id": 7}, {"x": ["é", {"y": None}], "z": 1.5, "t": True}):
        expected = dumps(((), kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}))
        assert publisher.task_body(kwargs) == expected.encode()


def test_properties_encoder_writes_py_amqps_bytes() -> None:
    # given a task's template and one message's headers
    template = publisher.header_template(contracts.SEND_WELCOME_EMAIL)
    encoder = publisher.PropertiesEncoder(template, celery_app.thread_oid)
    headers = publisher.task_headers(template, TASK_ID, publisher.kwargs_repr(EMAIL, 1024), time.time())

    # when it encodes them
    encoded = encoder.encode(headers, TASK_ID)

    # then the bytes are py-amqp's, and decode to the same properties
    assert encoded == reference_properties(headers)
    assert decoded(encoded)["application_headers"] == headers


@pytest.mark.parametrize(
    "edit",
    [
        {"timelimit": [10, 5]},
        {"stamps": {"tenant": "a"}, "stamped_headers": ["tenant"]},
        {"retries": True},
        {"retries": 2**40},
        {"task": "app.tasks.email_tasks.other", "shadow": "alias"},
        {"traceparent": "00-abc-def-01", "big": 2**33, "ratio": 0.5, "flag": False, "nothing": None},
        {"nested": {"a": [1, "b", {"c": 2.5}]}},
        {"eta": "2030-01-01T00:00:00+00:00", "origin": "someone-else@host"},
    ],
    ids=lambda edit: ",".join(edit),
)
def test_properties_encoder_follows_headers_edited_by_signal_receivers(edit: dict[str, Any]) -> None:
    # given headers a before_task_publish receiver changed or extended
    template = publisher.header_template(contracts.SEND_WELCOME_EMAIL)
    encoder = publisher.PropertiesEncoder(template, celery_app.thread_oid)
    headers = publisher.task_headers(template, TASK_ID, "{}", 1.0)
    headers.update(edit)

    # when they are encoded, then the bytes are still py-amqp's
    assert encoder.encode(headers, TASK_ID) == reference_properties(headers)


def test_built_message_is_a_persistent_json_task_message() -> None:
    # given a builder for the welcome email
    build = publisher.message_builder(contracts.SEND_WELCOME_EMAIL)

    # when one message is built
    before = time.time()
    message = build(0, TASK_ID, dict(EMAIL), TO_EMAIL)

    # then a consumer decodes Celery's protocol-2 message, stamped with sent_at
    properties = decoded(message._serialize_properties())
    headers = properties.pop("application_headers")
    assert properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "priority": 0,
        "correlation_id": TASK_ID,
        "reply_to": celery_app.thread_oid,
    }
    assert (headers["id"], headers["root_id"], headers["task"]) == (
        TASK_ID,
        TASK_ID,
        contracts.SEND_WELCOME_EMAIL,
    )
    assert isinstance(headers["sent_at"], float)
    assert before <= headers["sent_at"] <= time.time()
    assert message.body == publisher.task_body(EMAIL)


def test_a_group_member_carries_the_group_id_and_its_index() -> None:
    # given a builder for one group's welcome emails
    build = publisher.message_builder(contracts.SEND_WELCOME_EMAIL, group_id="group-1")

    # when its fourth member is built
    message = build(3, TASK_ID, dict(EMAIL), TO_EMAIL)

    # then the headers name the group and the member's place, as group(...).apply_async() does
    headers = decoded(message._serialize_properties())["application_headers"]
    assert (headers["group"], headers["group_index"]) == ("group-1", 3)
    assert reference_properties(headers) == message._serialize_properties()


def test_builder_fires_publish_signals_and_honours_their_edits() -> None:
    # given receivers that add a header, a property and a link, and one that watches publishes
    seen: list[str] = []

    def edit(headers: dict[str, Any], properties: dict[str, Any], body: Any, **_: Any) -> None:
        headers["tenant"] = "acme"
        properties["priority"] = 5
        body[2]["callbacks"] = [{"task": "x"}]

    def watch(sender: str, routing_key: str, **_: Any) -> None:
        seen.append(f"{sender} {routing_key}")

    signals.before_task_publish.connect(edit, weak=False)
    signals.after_task_publish.connect(watch, weak=False)
    try:
        # when a message is built
        message = publisher.message_builder(contracts.SEND_WELCOME_EMAIL)(0, TASK_ID, dict(EMAIL), TO_EMAIL)
    finally:
        signals.before_task_publish.disconnect(edit)
        signals.after_task_publish.disconnect(watch)

    # then the message carries every edit, and the after-publish receiver saw it
    properties = decoded(message._serialize_properties())
    assert properties["application_headers"]["tenant"] == "acme"
    assert properties["priority"] == 5
    assert b'"callbacks": [{"task": "x"}]' in bytes(message.body)
    assert seen == [f"{contracts.SEND_WELCOME_EMAIL} email.send_welcome_email"]


# --- confirm bookkeeping -----------------------------------------------------------------------------


def tracker_with(published: int) -> publisher.ConfirmTracker:
    tracker = publisher.ConfirmTracker([f"id-{i}" for i in range(10)])
    tracker.published = published
    return tracker


def test_multiple_ack_settles_every_tag_up_to_its_own() -> None:
    tracker = tracker_with(published=6)
    tracker.on_ack(4, True)
    assert list(tracker.outcomes[:6]) == [publisher.ACKED] * 4 + [publisher.PENDING] * 2
    assert (tracker.in_flight, tracker.failed) == (2, 0)


def test_out_of_order_single_confirms_and_a_later_multiple_ack() -> None:
    tracker = tracker_with(published=5)
    tracker.on_ack(3, False)
    tracker.on_nack(1, False)
    assert tracker.in_flight == 3
    tracker.on_ack(5, True)
    assert list(tracker.outcomes[:5]) == [publisher.NACKED] + [publisher.ACKED] * 4
    assert (tracker.in_flight, tracker.failed, tracker.settled) == (0, 1, 5)


def test_multiple_nack_fails_every_unsettled_tag_up_to_its_own() -> None:
    tracker = tracker_with(published=4)
    tracker.on_ack(1, False)
    tracker.on_nack(3, True)
    assert list(tracker.outcomes[:4]) == [
        publisher.ACKED,
        publisher.NACKED,
        publisher.NACKED,
        publisher.PENDING,
    ]
    assert tracker.failed == 2


def test_returned_message_stays_failed_when_its_ack_follows() -> None:
    tracker = tracker_with(published=3)
    returned = amqp.Message(b"", application_headers={"id": "id-1"})
    tracker.on_return(Exception("NO_ROUTE"), "magnetiq.tasks", "nowhere", returned)
    tracker.on_ack(3, True)
    assert list(tracker.outcomes[:3]) == [publisher.ACKED, publisher.RETURNED, publisher.ACKED]
    assert (tracker.failed, tracker.in_flight) == (1, 0)


def test_confirms_for_tags_never_published_are_ignored() -> None:
    tracker = tracker_with(published=2)
    tracker.on_ack(9, True)
    assert (tracker.settled, tracker.in_flight) == (2, 0)
    assert tracker.outcomes[2] == publisher.PENDING


def test_publish_error_names_every_unconfirmed_task_and_its_index() -> None:
    # given ten calls: 0-3 acked, 4 nacked, 5 returned, 6 unconfirmed, 7-9 never published
    tracker = tracker_with(published=7)
    tracker.on_ack(4, True)
    tracker.on_nack(5, False)
    tracker.on_return(Exception(), "x", "y", amqp.Message(b"", application_headers={"id": "id-5"}))

    # when the error is raised
    error = publisher.PublishError(contracts.SEND_WELCOME_EMAIL, "why", tracker)

    # then it sorts every call into confirmed or unconfirmed, and names each unconfirmed one
    assert error.confirmed == {i: f"id-{i}" for i in range(4)}
    assert error.unconfirmed == {i: f"id-{i}" for i in range(4, 10)}
    text = str(error)
    assert text.startswith(f"{contracts.SEND_WELCOME_EMAIL}: 6 of 10 tasks not confirmed (why); ")
    assert "nacked by the broker: #4 id-4;" in text
    assert "unroutable (not queued): #5 id-5;" in text
    assert "no confirm (may be queued): #6 id-6;" in text
    assert "not published: #7 id-7, #8 id-8, #9 id-9" in text
    assert all(f"id-{i}" not in text for i in range(4))


class SilentBroker:
    """Stands in for a connection whose confirms never come (our own wait loop is under test)."""

    def __init__(self) -> None:
        self.reads = 0

    def drain_events(self, timeout: float) -> None:
        self.reads += 1
        time.sleep(min(timeout, 0.01))
        raise TimeoutError


def test_wait_gives_up_after_its_timeout() -> None:
    silent = SilentBroker()
    started = time.monotonic()
    assert publisher._wait(silent, lambda: False, 0.05) is False
    assert 0.05 <= time.monotonic() - started < 1
    assert silent.reads >= 1


# --- validation and routing ------------------------------------------------------------------------------


def test_bad_call_is_named_by_index_without_its_values() -> None:
    calls = [dict(EMAIL) for _ in range(5)]
    calls[3] = {"user_email": DISTINCTIVE, "user_name": "x"}
    with pytest.raises(contracts.InvalidTaskArguments, match=r"^call #3: .*user_email") as raised:
        publisher.validate_calls(contracts.SEND_WELCOME_EMAIL, calls, contracts.WelcomeEmailArgs)
    assert DISTINCTIVE not in str(raised.value)


def test_valid_calls_are_dumped_as_json_types() -> None:
    validated = publisher.validate_calls(
        contracts.PROCESS_PAYMENT, [{"payment_id": 3}], contracts.ProcessPaymentArgs
    )
    assert validated == [{"payment_id": 3}]
    assert publisher.validate_calls("any", iter([EMAIL]), None) == [EMAIL]


def test_calls_are_routed_by_the_apps_router() -> None:
    destinations = publisher.route_calls(contracts.SEND_WELCOME_EMAIL, [EMAIL, EMAIL])
    assert destinations[0] == (
        names.TASKS_EXCHANGE,
        "email.send_welcome_email",
        celery_app.amqp.queues["email"],
    )
    assert destinations[0] is destinations[1]


def test_unknown_task_has_no_route() -> None:
    with pytest.raises(QueueNotFound, match=r"no route for task .app\.tasks\.nope\.do_it."):
        publisher.route_calls("app.tasks.nope.do_it", [{}])


def test_route_to_an_undeclared_queue_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(routes.PREFIXES, "app.tasks.ghost.", "ghost")
    with pytest.raises(QueueNotFound, match="ghost"):
        publisher.route_calls("app.tasks.ghost.haunt", [{}])


def test_route_to_a_direct_queue_without_routing_key_uses_the_default_exchange() -> None:
    queue = Queue("direct-q", Exchange("d", type="direct"))
    assert publisher.Destination.from_route({"queue": queue}) == ("", "direct-q", queue)
    route = {
        "queue": queue,
        "exchange": Exchange("x", type="topic"),
        "routing_key": "k",
        "exchange_type": "topic",
    }
    assert publisher.Destination.from_route(route) == ("x", "k", queue)


def test_enqueue_many_rejects_a_useless_window_or_timeout() -> None:
    with pytest.raises(ValueError, match="window"):
        publisher.enqueue_many(contracts.SEND_WELCOME_EMAIL, [EMAIL], window=0)
    with pytest.raises(ValueError, match="timeout"):
        publisher.enqueue_many(contracts.SEND_WELCOME_EMAIL, [EMAIL], timeout=0)
