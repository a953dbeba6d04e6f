"""Connection poolers that cannot keep prepared statements.

Our statements are prepared on the server (``PREPARE_STATEMENTS``, on by default: planning
them cost more than running them). Behind PgBouncer before 1.21 in transaction mode - or with
``max_prepared_statements = 0`` - a client's prepared statement lives on whichever server
connection it happened to get, so the next transaction meets ``prepared statement "_pg3_0"
already exists`` (DuplicatePreparedStatement) or ``... does not exist``
(InvalidSqlStatementName). Before this module a worker died on it, was restarted, and died
again: a crash loop that ran nothing and named nothing.

Worse, a name can stand for another client's statement on that server connection: an error
when the parameters do not fit, and otherwise the other statement would run. So behind such a
pooler set ``PREPARE_STATEMENTS = False``: what follows is a safety net for the errors, not a
reason to leave the setting on.

Now the first such error turns preparing off for the whole process (every connection of the
process goes through the same pooler), with one warning naming the setting, and the statement
is sent again unprepared where that is safe: a statement of its own transaction (the
workers'), or an enqueue outside a transaction. An enqueue inside the caller's transaction
cannot be sent again - the transaction is aborted - so it raises, once per process, an error
that says what to set.
"""

from __future__ import annotations

import logging

import psycopg
from django.db import OperationalError
from psycopg import errors

from .conf import task_settings

__all__ = [
    "PREPARED_STATEMENT_ERRORS",
    "PreparedStatementsUnsupported",
    "disconnected",
    "lost",
    "preparing",
    "stop_preparing",
]

logger = logging.getLogger("django_tasks.poolers")

#: What a pooler that lost (or mixed up) our prepared statements answers: the name is taken,
#: missing, or names another client's statement (``bind message supplies 2 parameters, but
#: prepared statement "_pg3_0" requires 3`` - a ProtocolViolation, see :func:`lost`).
PREPARED_STATEMENT_ERRORS = (
    errors.DuplicatePreparedStatement,
    errors.InvalidSqlStatementName,
    errors.ProtocolViolation,
)


def lost(error: BaseException) -> bool:
    """Whether ``error`` (one of :data:`PREPARED_STATEMENT_ERRORS`) says that a pooler mixed
    up prepared statements (a protocol violation may have other causes)."""
    if isinstance(error, errors.ProtocolViolation):
        return "prepared statement" in str(error)
    return isinstance(error, PREPARED_STATEMENT_ERRORS)


def disconnected(error: BaseException) -> bool:
    """Whether ``error`` means that the connection is lost or unusable for now, not that the
    statement is wrong: reconnect, back off and send it again - never give up, never exit.

    That is every ``psycopg.OperationalError``: SQLSTATE class 08 (a connection failure;
    PgBouncer answers 08P01 ``server login has been failing, try again later
    (server_login_retry)`` for a while after the database restarted, and 08P01 too for
    ``query_wait_timeout`` or a server connection it lost), 57P01-57P03 (admin or crash
    shutdown, the database starting up), class 53 (too many connections, out of memory or
    disk), lock and statement timeouts, and connection errors that carry no SQLSTATE at all.
    Not a prepared statement that a pooler mixed up (:func:`lost`: mended otherwise), and not
    class 54 (a statement too large or complex for the server: it would fail again the same
    way, for ever)."""
    if not isinstance(error, psycopg.OperationalError) or lost(error):
        return False
    return not (error.sqlstate or "").startswith("54")


ADVICE = (
    "The database connection goes through a pooler that cannot keep prepared statements "
    "(PgBouncer before 1.21 in transaction mode, or max_prepared_statements = 0): {error}. "
    "This process goes on without preparing statements; set "
    "DJANGO_TASKS = {{'PREPARE_STATEMENTS': False}} to say so from the start (or give PgBouncer "
    "1.21+ max_prepared_statements)."
)

_stopped = False


class PreparedStatementsUnsupported(OperationalError):
    """An enqueue inside the caller's transaction met a pooler that cannot keep prepared
    statements: the transaction is aborted. Later enqueues of the process are not prepared.
    A ``django.db.OperationalError``, as Django's own database errors are."""


def preparing() -> bool:
    """Whether our statements are prepared in this process."""
    return task_settings().PREPARE_STATEMENTS and not _stopped


def stop_preparing(error: BaseException) -> str:
    """Prepare nothing more in this process; warn once. Returns the advice text."""
    global _stopped
    message = ADVICE.format(error=str(error).strip() or type(error).__name__)
    if not _stopped:
        _stopped = True
        logger.warning(message)
    return message


def _reset_for_tests() -> None:
    global _stopped
    _stopped = False
