"""Where a sweep's study lives: its database URL, opening it, and recognising the errors of a lost database.

SQLite in the sweep folder by default, or any URL Optuna takes (``postgresql://...``) so that workers on several
machines can join one study. Optuna (and SQLAlchemy, which it brings) is imported where it is used: it is an
optional dependency (``cnnlab[sweep]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, summary

PSYCOPG_URL = "postgresql+psycopg://"  # a PostgreSQL URL with the driver the sweep extra installs, psycopg 3


class StorageLost(CnnlabError):
    """The study's database stopped answering (or never did)."""


def storage_url(url: str | None, sweep_dir: Path) -> str:
    """The database URL: SQLite in the sweep folder by default; ``postgresql://`` uses the psycopg driver."""
    if url is None:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    for plain in ("postgresql://", "postgres://"):  # SQLAlchemy's default PostgreSQL driver is psycopg2, not ours
        if url.startswith(plain):
            return PSYCOPG_URL + url[len(plain):]
    return url


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: Optuna will say so
        return url


def first_line(error: BaseException) -> str:
    """The first line of an error (the database driver's own, when SQLAlchemy wraps one, also under an error of
    Optuna's that only says a commit failed), for one-line messages."""
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:  # down the chain to the driver's error
        seen.add(id(cause))
        if getattr(cause, "orig", None) is not None:
            return summary(str(cause.orig).split("\n")[0], 300)
        cause = cause.__cause__ or cause.__context__
    return summary(str(error).split("\n")[0], 300)


def db_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a lost or unreachable database raises through Optuna."""
    import optuna
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError


def database_failure(error: BaseException) -> BaseException | None:
    """The database error behind ``error``, if one is in its chain of causes, else None.

    Optuna does not always pass the database's error on: when recording a trial's end fails, the trial still
    looks running to it and it raises ``AssertionError("Should not reach.")`` with the real error as context.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, db_errors()):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def grace_period(heartbeat: float) -> int:
    """Seconds without a heartbeat after which a running trial is failed: three heartbeats (whole seconds)."""
    return 3 * max(1, round(heartbeat))


def open_storage(url: str, heartbeat: float):
    """An Optuna RDBStorage with a heartbeat, so that a killed worker's trial is failed after :func:`grace_period`.

    Raises:
        StorageLost: the database cannot be reached or opened.
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several workers on one file: wait for SQLite's lock instead of failing at once
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    grace = grace_period(heartbeat)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is "experimental"
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=grace // 3,
                                                 grace_period=grace)
    except db_errors() as e:
        raise StorageLost(f"cannot open the study database {shown(url)}: {first_line(e)}") from None
    if url.startswith("sqlite"):
        _lock_sqlite_on_begin(storage.engine)
    return storage


def _lock_sqlite_on_begin(engine) -> None:
    """Make every transaction on this SQLite engine take the database's write lock as it begins.

    Optuna gives an enqueued trial to one worker by reading it as waiting and then marking it running, in one
    transaction locked by ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 module opens the
    transaction only at the UPDATE. So two workers could both read "waiting" and both run the trial (Optuna
    issues 4002 and 4621; here it happened in a two-worker sweep). With the lock taken at BEGIN the read and the
    write are one step; SQLite then serialises the workers' database calls, which are short beside a trial.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the "begin" listener opens each transaction instead

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed (Optuna's own, while opening) are dropped
