"""Broker account passwords: RabbitMQ definitions with password hashes filled in.

The shipped ``deploy/rabbitmq/definitions.json`` holds no secret (empty hashes).
``python -m routing.accounts DEFINITIONS USER=PASSWORD ...`` prints it with each
named user's hash set, ready for RabbitMQ to import at boot (a Kubernetes Secret,
or ``definitions.dev.json`` for compose). A password given as ``USER=-`` is read
from the environment variable ``USER`` names, upper-cased with ``-`` as ``_``
(``magnetiq-worker=-`` reads ``MAGNETIQ_WORKER``), so it stays out of the shell history.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
from typing import Any

#: The hashing RabbitMQ's definitions name for each user.
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """Return RabbitMQ's ``rabbit_password_hashing_sha256`` hash of ``password``.

    base64(salt + sha256(salt + utf-8 password)) with a 4-byte salt, as
    RabbitMQ's ``rabbit_password`` module computes it.
    """
    salt = secrets.token_bytes(4) if salt is None else salt
    if len(salt) != 4:
        raise ValueError("RabbitMQ's salt is 4 bytes")
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a definitions file's ``password_hash``) is the hash of ``password``."""
    raw = base64.b64decode(hashed)
    return len(raw) == 36 and password_hash(password, raw[:4]) == hashed


def with_passwords(definitions: dict[str, Any], passwords: dict[str, str]) -> dict[str, Any]:
    """Return ``definitions`` with each named user's password hash set.

    Raises:
        ValueError: a name is not a user of the definitions, or a password is empty.
    """
    users = {user["name"] for user in definitions["users"]}
    unknown = sorted(set(passwords) - users)
    if unknown:
        raise ValueError(f"not users of the definitions: {', '.join(unknown)}")
    empty = sorted(user for user, password in passwords.items() if not password)
    if empty:
        raise ValueError(f"empty password for {', '.join(empty)}")
    filled: dict[str, Any] = json.loads(json.dumps(definitions))
    for user in filled["users"]:
        if user["name"] in passwords:
            user["password_hash"] = password_hash(passwords[user["name"]])
            user["hashing_algorithm"] = HASHING_ALGORITHM
    return filled


def parse_assignment(argument: str, environ: dict[str, str]) -> tuple[str, str]:
    """Split ``USER=PASSWORD``; ``USER=-`` takes the password from the environment."""
    user, sep, password = argument.partition("=")
    if not sep or not user:
        raise ValueError(f"expected USER=PASSWORD, got {argument.split('=', 1)[0]!r}")
    if password == "-":
        variable = user.upper().replace("-", "_")
        if variable not in environ:
            raise ValueError(f"{user}=- reads the environment variable {variable}, which is unset")
        password = environ[variable]
    return user, password


def main(argv: list[str]) -> int:
    """Print the definitions file ``argv[0]`` with the passwords ``argv[1:]`` hashed in."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)  # noqa: T201 - a command's usage text
        return 2
    try:
        with open(argv[0], encoding="utf-8") as source:
            definitions = json.load(source)
        passwords = dict(parse_assignment(argument, dict(os.environ)) for argument in argv[1:])
        filled = with_passwords(definitions, passwords)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a command's error
        return 1
    print(json.dumps(filled, indent=2))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
