"""Contract: the private Celery and py-amqp APIs the fleet relies on are still there, and pinned.

Five places reach below the public API: ``app/publisher.py``
(``enqueue_many`` hands py-amqp pre-serialised message properties and
publishes with ``send_method``) and ``workers/consumer.py`` (the green-pool
loop's event drain), because the bench shows they pay; and
``routing/redis_transport.py`` (a rejected message moves from kombu's unacked
hash to its dead-letter list), because kombu's Redis transport would drop it;
and ``app/redis_results.py`` (a task's own result expiry on Celery's Redis backend);
and ``workers/timers.py`` (cancelled time-limit timers swept out of kombu's timer heap).
An upgrade that changes what they rely on must fail here, naming the API, before it fails in production.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib.metadata import version

import amqp
import pytest
from amqp import method_framing
from amqp.channel import Channel
from celery.backends.base import KeyValueStoreBackend
from celery.backends.redis import RedisBackend
from celery.concurrency import asynpool
from celery.worker import loops
from kombu.asynchronous import timer
from kombu.transport import redis
from packaging.specifiers import SpecifierSet

from tests.support.paths import ROOT

#: Distributions whose private APIs the fleet uses, so each needs an upper bound.
COUPLED = ("celery", "kombu", "amqp")


def requirement(name: str) -> SpecifierSet:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        match = re.fullmatch(rf"{name}\s*([<>=!~].*)", line)
        if match:
            return SpecifierSet(match.group(1))
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


@pytest.mark.parametrize("name", COUPLED)
def test_coupled_distributions_have_an_upper_bound_the_installed_one_meets(name: str) -> None:
    # given the requirement pyproject.toml declares
    specifiers = requirement(name)
    # then it bounds the version from above, and the installed version is inside it
    assert any(spec.operator in {"<", "<="} for spec in specifiers), f"{name} needs an upper bound"
    assert version(name) in specifiers, f"installed {name} {version(name)} is outside {specifiers}"


def test_py_amqp_frame_writer_still_asks_the_message_for_its_properties() -> None:
    # given py-amqp's frame writer, then it serialises properties through Message._serialize_properties
    assert hasattr(amqp.Message, "_serialize_properties"), "amqp.Message._serialize_properties is gone"
    assert "_serialize_properties" in inspect.getsource(method_framing.frame_writer), (
        "amqp.method_framing.frame_writer no longer calls Message._serialize_properties: "
        "app.publisher._Encoded would be ignored"
    )


def test_basic_publish_still_sends_the_argument_format_enqueue_many_hand_writes() -> None:
    # given py-amqp's basic.publish, then its argument signature is the "Bssbb" app.publisher sends
    signature = inspect.signature(Channel._basic_publish)
    assert signature.parameters["argsig"].default == "Bssbb", (
        "amqp.channel.Channel._basic_publish changed its argsig: app.publisher._stream sends 'Bssbb'"
    )


def test_green_pool_loop_still_drains_events_through_the_module_level_quick_drain() -> None:
    # given Celery's synloop, then it calls loops._quick_drain(connection, timeout) by module lookup
    assert hasattr(loops, "_quick_drain"), "celery.worker.loops._quick_drain is gone"
    assert list(inspect.signature(loops._quick_drain).parameters) == ["connection", "timeout"], (
        "celery.worker.loops._quick_drain changed its signature: workers.consumer replaces it"
    )
    assert "_quick_drain(" in inspect.getsource(loops.synloop), (
        "celery.worker.loops.synloop no longer calls _quick_drain: workers.consumer's fix does nothing"
    )


def test_kombus_redis_qos_still_keeps_unacked_messages_as_the_dead_lettering_reads_them() -> None:
    # given kombu's Redis QoS, then an unacked message is [payload, exchange, routing_key] in
    # the unacked hash, removed by _remove_from_indices(tag, pipe), as restore_by_tag shows
    parameters = list(inspect.signature(redis.QoS._remove_from_indices).parameters)
    assert parameters == ["self", "delivery_tag", "pipe"]
    source = inspect.getsource(redis.QoS.restore_by_tag)
    assert "M, EX, RK = loads(" in source and "self.unacked_key" in source, (
        "kombu's Redis QoS changed how it stores unacked messages: routing.redis_transport reads them"
    )
    assert hasattr(redis.Channel, "conn_or_acquire"), "kombu's Redis Channel.conn_or_acquire is gone"


def test_kombus_redis_channel_still_restores_each_message_through_one_hook() -> None:
    # given kombu's Redis channel, then every path that puts an unacked message back (a requeue,
    # an expired visibility timeout, a closing channel) goes through _do_restore_message, where
    # routing.redis_transport counts failed deliveries
    parameters = list(inspect.signature(redis.Channel._do_restore_message).parameters)
    assert parameters == ["self", "payload", "exchange", "routing_key", "pipe", "leftmost"]
    assert "_do_restore_message(" in inspect.getsource(redis.QoS.restore_by_tag)
    assert "restore_by_tag(" in inspect.getsource(redis.QoS.restore_visible)
    assert "restore_by_tag(" in inspect.getsource(redis.QoS.restore_unacked), (
        "kombu's Redis QoS.restore_unacked changed: routing.redis_transport leaves its restores uncounted"
    )
    assert hasattr(redis.Channel, "_disconnect_pools"), "kombu's Redis Channel._disconnect_pools is gone"


def test_kombus_redis_channel_still_builds_its_client_from_the_connection() -> None:
    # given kombu's Redis channel, then _connparams(asynchronous) reads the kombu connection's
    # client, which Celery sets to None when it collects a lost connection: routing.redis_transport
    # keeps the parameters it first built for the restores and acks that come after
    assert list(inspect.signature(redis.Channel._connparams).parameters) == ["self", "asynchronous"]
    assert "self.connection.client" in inspect.getsource(redis.Channel._connparams), (
        "kombu's Redis Channel._connparams no longer reads connection.client: "
        "routing.redis_transport.OutlivesItsConnection may be unneeded or wrong"
    )


def test_celerys_redis_result_backend_still_stores_through_set_with_state() -> None:
    # given Celery's Redis backend, then a result is stored by _store_result through
    # _set_with_state(key, value, state), and set() takes the key's expiry: app.redis_results
    # sets a task's own result_expires there
    assert "_set_with_state(" in inspect.getsource(KeyValueStoreBackend._store_result)
    assert list(inspect.signature(RedisBackend._set_with_state).parameters) == [
        "self",
        "key",
        "value",
        "state",
    ]
    assert "expires" in inspect.signature(RedisBackend.set).parameters, (
        "celery's RedisBackend.set no longer takes expires: app.redis_results sets per-task expiry with it"
    )


def test_kombus_timer_still_keeps_its_heap_of_entries_that_are_marked_cancelled() -> None:
    # given a kombu timer with one entry armed and cancelled
    schedule = timer.Timer()
    schedule.call_after(60, print).cancel()
    # then its heap is the list `_queue` of (eta, priority, entry), the entry marked `canceled`
    (item,) = schedule._queue
    assert item.entry.canceled is True, "kombu Timer entries no longer carry `canceled`: workers.timers"
    assert "self._queue" in inspect.getsource(timer.Timer.__iter__), (
        "kombu's scheduler no longer iterates Timer._queue: workers.timers sweeps the wrong list"
    )


def test_the_prefork_pool_still_arms_a_loop_timer_per_task_and_cancels_it_when_the_task_ends() -> None:
    # given the async prefork pool's time-limit handlers, then they arm hub.call_later and cancel the tref
    source = inspect.getsource(asynpool.AsynPool._create_timelimit_handlers)
    assert "call_later(" in source and "tref.cancel()" in source, (
        "AsynPool no longer arms and cancels a hub timer per task: see whether workers.timers is still needed"
    )
