"""Unit tests of workers.profiles and ``python -m workers``: the Celery command of each role."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from celery.beat import PersistentScheduler

from routing import names
from tests.support.paths import ROOT
from workers.__main__ import build_argv, main
from workers.beat import LeaderScheduler
from workers.profiles import PROFILES

#: Expected (queues, pool, concurrency, prefetch multiplier) per profile.
EXPECTED = {
    "email": ((names.EMAIL,), "gevent", 100, 4),
    "bulk": ((names.BULK,), "gevent", 100, 4),
    "booking": ((names.BOOKING,), "prefork", 2 * (os.cpu_count() or 1), 1),
    "maintenance": ((names.MAINTENANCE,), "prefork", 1, 1),
}


def option(argv: list[str], *flags: str) -> str:
    """Return the value following the first of ``flags`` in ``argv``."""
    for flag in flags:
        if flag in argv:
            return argv[argv.index(flag) + 1]
    raise AssertionError(f"none of {flags} in {argv}")


def test_profiles_are_the_expected_ones() -> None:
    # given the declared profiles
    # when their names are listed
    # then there is one per workload
    assert set(PROFILES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_argv(name: str) -> None:
    # given a profile
    queues, pool, concurrency, prefetch = EXPECTED[name]

    # when its worker command is built
    argv = PROFILES[name].argv()

    # then it names the node, queues, pool, concurrency and prefetch
    assert argv[:3] == ["-A", "workers.entry", "worker"]
    assert option(argv, "--hostname", "-n") == f"{name}@%h"
    assert option(argv, "--queues", "-Q").split(",") == list(queues)
    assert option(argv, "--pool", "-P") == pool
    assert option(argv, "--concurrency", "-c") == str(concurrency)
    assert option(argv, "--prefetch-multiplier") == str(prefetch)


def test_booking_concurrency_follows_the_cpu_count() -> None:
    # given the booking profile (concurrency 0 means per_core processes per core)
    profile = PROFILES["booking"]

    # when its effective concurrency is read
    # then it is two processes per core
    assert profile.concurrency == 0
    assert profile.per_core == 2
    assert profile.effective_concurrency == 2 * (os.cpu_count() or 1)


@pytest.mark.parametrize("name", ["booking", "maintenance"])
def test_prefork_profiles_recycle_children(name: str) -> None:
    # given a prefork profile
    argv = PROFILES[name].argv()

    # when its command is read
    # then children are recycled by task count and memory
    assert int(option(argv, "--max-tasks-per-child")) > 0
    assert int(option(argv, "--max-memory-per-child")) > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build_argv_runs_celery_with_this_python(name: str) -> None:
    # given a worker role and extra Celery arguments
    # when the full command is built
    argv = build_argv(name, extra=["--autoscale=10,3"], loglevel="DEBUG")

    # then it runs celery on this interpreter with the profile's arguments, extras last
    assert argv[:3] == [sys.executable, "-m", "celery"]
    assert argv[3:-1] == PROFILES[name].argv(loglevel="DEBUG")
    assert argv[-1] == "--autoscale=10,3"


def test_build_argv_beat() -> None:
    # when the beat command is built
    argv = build_argv("beat")

    # then it runs beat on the entry app, with no schedule file: the scheduler keeps its state
    # in PostgreSQL and, unlike Celery's PersistentScheduler, never opens one
    assert "beat" in argv
    assert "worker" not in argv
    assert option(argv, "-A") == "workers.entry"
    assert "--schedule" not in argv and "-s" not in argv
    assert not issubclass(LeaderScheduler, PersistentScheduler)


def test_main_print_shows_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    # given the email role with --print and a log level
    # when main runs
    main(["email", "--print", "--loglevel", "WARNING"])

    # then it prints the command instead of running it
    printed = capsys.readouterr().out.strip()
    assert printed == " ".join(build_argv("email", loglevel="WARNING"))


def test_main_rejects_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    # given a role that does not exist
    # when main runs
    # then argparse refuses it
    with pytest.raises(SystemExit) as caught:
        main(["reports", "--print"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_module_print_in_a_subprocess() -> None:
    # given a clean interpreter

    # when `python -m workers email --print` runs
    completed = subprocess.run(
        [sys.executable, "-m", "workers", "email", "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    # then it prints the celery worker command for the email queue and exits 0
    assert completed.returncode == 0, completed.stderr
    argv = completed.stdout.split()
    assert argv[1:3] == ["-m", "celery"]
    assert "worker" in argv
    assert option(argv, "--hostname") == "email@%h"
    assert option(argv, "--queues") == names.EMAIL
    assert option(argv, "--pool") == "gevent"
