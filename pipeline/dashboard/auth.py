"""Dashboard users and roles, read from ``HUBSYNC_DASHBOARD_USERS`` ("name:role:password-hash,…").

Passwords are kept only as werkzeug PBKDF2 hashes (``hubsync dashboard-user NAME ROLE`` makes an entry).
``viewer`` reads; ``operator`` also replays and discards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("viewer", "operator")
HASH_METHOD = "pbkdf2:sha256:600000"
MIN_PASSWORD_CHARS = 10
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Checked against when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password of anybody", method=HASH_METHOD)


class UsersError(ValueError):
    """``HUBSYNC_DASHBOARD_USERS`` is missing or malformed."""


@dataclass(frozen=True)
class User:
    """Somebody who may log in to the dashboard."""

    name: str
    role: str
    password_hash: str

    @property
    def can_act(self) -> bool:
        """True for operators: they may replay and discard."""
        return self.role == "operator"

    def __repr__(self) -> str:
        return f"User(name={self.name!r}, role={self.role!r})"


def parse_users(spec: str) -> dict[str, User]:
    """Read "name:role:hash,…"; the hash itself holds colons, so each entry splits on its first two."""
    users: dict[str, User] = {}
    for number, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3:
            raise UsersError(f"HUBSYNC_DASHBOARD_USERS entry {number} is not name:role:password-hash")
        name, role, password_hash = parts
        if not NAME_PATTERN.match(name):
            raise UsersError(f"HUBSYNC_DASHBOARD_USERS entry {number}: bad user name {name[:64]!r}")
        if role not in ROLES:
            raise UsersError(f"HUBSYNC_DASHBOARD_USERS entry {number}: role must be one of {', '.join(ROLES)}")
        if not password_hash.startswith(("pbkdf2:", "scrypt:")) or password_hash.count("$") != 2:
            raise UsersError(
                f"HUBSYNC_DASHBOARD_USERS entry {number}: not a password hash (make one with `hubsync dashboard-user`)"
            )
        if name in users:
            raise UsersError(f"HUBSYNC_DASHBOARD_USERS names {name} twice")
        users[name] = User(name, role, password_hash)
    if not users:
        raise UsersError("HUBSYNC_DASHBOARD_USERS names nobody (make entries with `hubsync dashboard-user NAME ROLE`)")
    return users


def make_entry(name: str, role: str, password: str) -> str:
    """One ``HUBSYNC_DASHBOARD_USERS`` entry for a user, with a PBKDF2 hash of the password."""
    if not NAME_PATTERN.match(name):
        raise UsersError("a user name is 1 to 64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise UsersError(f"the role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    return f"{name}:{role}:{generate_password_hash(password, method=HASH_METHOD)}"


def authenticate(users: dict[str, User], name: str, password: str) -> User | None:
    """The user whose name and password these are, or None."""
    user = users.get(name)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None
