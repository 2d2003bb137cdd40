"""Broker account passwords hashed into RabbitMQ definitions (``routing.accounts``)."""

from __future__ import annotations

import json

import pytest

from routing.accounts import check_password, main, parse_assignment, password_hash, with_passwords
from tests.support.deploy_files import DEPLOY

DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"


def test_the_hash_is_rabbitmqs_sha256_hash() -> None:
    # the worked example of RabbitMQ's "Credentials and Passwords" guide (salt 908DC60A, password test12)
    assert (
        password_hash("test12", bytes.fromhex("908DC60A"))
        == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )
    assert check_password("test12", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")
    assert not check_password("test13", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")


def test_each_named_user_gets_a_hash_of_its_password() -> None:
    shipped = json.loads(DEFINITIONS.read_text())
    filled = with_passwords(shipped, {"magnetiq-worker": "w-secret"})
    users = {user["name"]: user for user in filled["users"]}
    assert check_password("w-secret", users["magnetiq-worker"]["password_hash"])
    assert users["magnetiq-producer"]["password_hash"] == ""  # not named: unchanged
    assert json.loads(DEFINITIONS.read_text()) == shipped  # the input is not modified


@pytest.mark.parametrize(
    ("passwords", "message"),
    [
        ({"magnetiq": "x"}, "not users of the definitions: magnetiq"),
        ({"magnetiq-worker": ""}, "empty password"),
    ],
)
def test_a_bad_assignment_is_refused(passwords: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        with_passwords(json.loads(DEFINITIONS.read_text()), passwords)


def test_a_password_can_come_from_the_environment() -> None:
    assert parse_assignment("magnetiq-worker=-", {"MAGNETIQ_WORKER": "from-env"}) == (
        "magnetiq-worker",
        "from-env",
    )
    with pytest.raises(ValueError, match="MAGNETIQ_WORKER, which is unset"):
        parse_assignment("magnetiq-worker=-", {})
    with pytest.raises(ValueError, match="expected USER=PASSWORD"):
        parse_assignment("magnetiq-worker", {})


def test_the_command_prints_the_filled_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DEFINITIONS), "magnetiq-producer=p-secret"]) == 0
    users = {user["name"]: user for user in json.loads(capsys.readouterr().out)["users"]}
    assert check_password("p-secret", users["magnetiq-producer"]["password_hash"])
    assert main([str(DEFINITIONS), "nobody=x"]) == 1
    assert "not users of the definitions" in capsys.readouterr().err
