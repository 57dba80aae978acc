"""Plans on a DB-API connection, run by the thread that owns it (SQLite's writer and readers).

:func:`run_plan` drives a plan with blocking calls. :func:`run_group` is a writer thread's
group commit (see :class:`~..kit.threads.Writer`): the jobs waiting together run in one
transaction, each inside its own ``SAVEPOINT`` (a failing job leaves the others intact), and
are committed once, before any caller hears of it. Should the engine roll the whole group
back (a job's error that ends the transaction, a failed ``COMMIT``), the group runs again in
parts (:mod:`..kit.apart`): only the job at fault fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from ..kit.apart import run_apart_sync
from ..kit.threads import Job, Outcome
from .append import Append, append_group
from .dialect import Dialect
from .steps import Commit, Done, Execute, ExecuteMany, Fetch, Insert, Plan, Step, begin

__all__ = ["AppendJob", "PlanJob", "ThenJob", "execute", "run_group", "run_plan"]

T = TypeVar("T")


def execute(conn: Any, step: Step) -> Any:
    """Run one step on a DB-API connection."""
    return _RUN[step.__class__](conn, step)


def _fetch(conn: Any, step: Fetch) -> list[Any]:
    # fetchall() always: a half-read statement would pin a reader's snapshot.
    return conn.execute(step.sql, step.args).fetchall()  # type: ignore[no-any-return]


def _execute(conn: Any, step: Execute) -> int:
    return conn.execute(step.sql, step.args).rowcount  # type: ignore[no-any-return]


def _insert(conn: Any, step: Insert) -> int | None:
    cur = conn.execute(step.sql, step.args)
    return cur.lastrowid if cur.rowcount else None


def _execute_many(conn: Any, step: ExecuteMany) -> None:
    conn.executemany(step.sql, step.rows)


def _commit(conn: Any, step: Commit) -> None:
    return None  # the group's transaction holds other jobs too


_RUN: dict[type, Callable[[Any, Any], Any]] = {
    Fetch: _fetch,
    Execute: _execute,
    Insert: _insert,
    ExecuteMany: _execute_many,
    Commit: _commit,
}


def run_plan(conn: Any, make_plan: Callable[[], Plan[T]]) -> T:
    """Run a new plan to its end on ``conn``."""
    return _drive(make_plan(), conn, None)


def _drive(plan: Plan[T], conn: Any, first: Step | Done | None) -> T:
    # Every SQLite operation's loop: each step run by its kind's function, inline.
    step = begin(plan) if first is None else first
    if isinstance(step, Done):
        return step.value  # type: ignore[no-any-return]
    send, throw, run = plan.send, plan.throw, _RUN
    try:
        while True:
            try:
                result = run[step.__class__](conn, step)
            except Exception as exc:
                step = throw(exc)
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class PlanJob:
    """A writer's job running a plan, prepared before its group's transaction opens.

    Building it runs the plan up to its first statement (its preparation: text analysis,
    vector encoding). Should its group run again, a new plan is made.
    """

    __slots__ = ("_first", "_plan", "make_plan")

    def __init__(self, make_plan: Callable[[], Plan[Any]]) -> None:
        self.make_plan = make_plan
        self._plan: Plan[Any] | None = make_plan()
        self._first: Step | Done = begin(self._plan)  # the plan's preparation runs here

    def __call__(self, conn: Any) -> Any:
        plan, first = self._plan, self._first
        if plan is None:
            return run_plan(conn, self.make_plan)
        self._plan = None
        return _drive(plan, conn, first)


class ThenJob:
    """A job with a step to run after its group commits, outside any transaction.

    ``then(conn)`` runs on the writer thread before the caller hears of the commit (once per
    group for equal steps); its failure is the caller's failure, though the job itself stays
    committed. SQLite allows some work only outside a transaction (a WAL checkpoint, VACUUM).
    """

    __slots__ = ("job", "then")

    def __init__(self, job: Job, then: Job) -> None:
        self.job = job
        self.then = then

    def __call__(self, conn: Any) -> Any:
        return self.job(conn)


class AppendJob:
    """A writer's job appending messages (:func:`~.append.append_group`).

    The appends of jobs waiting together in a group run as one plan: one statement per
    step for all of them (as a group commit's batch does on the network engines).
    """

    __slots__ = ("appends", "dialect")

    def __init__(self, dialect: Dialect, appends: Sequence[Append]) -> None:
        self.dialect = dialect
        self.appends = appends

    def __call__(self, conn: Any) -> Any:
        return run_plan(conn, partial(append_group, self.dialect, self.appends))


class _Appends:
    """Consecutive :class:`AppendJob` jobs of a group as one job (their plan prepared now,
    before the group's transaction opens); its value is the list of their values."""

    __slots__ = ("jobs", "plan")

    def __init__(self, jobs: list[AppendJob]) -> None:
        self.jobs = jobs
        appends = [a for job in jobs for a in job.appends]
        self.plan = PlanJob(partial(append_group, jobs[0].dialect, appends))

    def __call__(self, conn: Any) -> list[Any]:
        outcomes = self.plan(conn)
        out: list[Any] = []
        for job in self.jobs:
            out.append(outcomes[: len(job.appends)])
            outcomes = outcomes[len(job.appends) :]
        return out


def run_group(
    conn: Any, jobs: list[Job], begin_sql: str = "BEGIN IMMEDIATE", *, merge: bool = True
) -> list[Outcome]:
    """Run the jobs in one transaction; each one's outcome once it is committed."""
    if len(jobs) == 1 and not isinstance(jobs[0], ThenJob):
        return [_alone(conn, begin_sql, jobs[0])]
    units = _merged(jobs) if merge else jobs
    results = run_apart_sync(units, partial(_transaction, conn, begin_sql), lambda exc: False)
    outcomes: list[Outcome] = []
    for unit, result in zip(units, results, strict=True):
        if not isinstance(unit, _Appends):
            outcomes.append(_outcome(result))
        elif isinstance(result, (_Failed, Exception)):
            # The appends failed together: each runs on its own, so only one at fault fails.
            outcomes += run_group(conn, list(unit.jobs), begin_sql, merge=False)
        else:
            outcomes += [(None, value) for value in result]
    return _after_commit(conn, jobs, outcomes)


def _alone(conn: Any, begin_sql: str, job: Job) -> Outcome:
    """One job in a transaction of its own: nothing to merge, nor to split should it fail."""
    try:
        if isinstance(job, AppendJob):  # its plan prepared before the transaction opens
            job = PlanJob(partial(append_group, job.dialect, job.appends))
        conn.execute(begin_sql)
    except Exception as exc:  # busy past the timeout, an I/O error
        return exc, None
    try:
        result = job(conn)
        conn.execute("COMMIT")
    except Exception as exc:
        _rollback(conn)
        return exc, None
    return _outcome(result)


def _merged(jobs: list[Job]) -> list[Job]:
    """The jobs, with each run of consecutive appends writing distinct ids as one job."""
    units: list[Job] = []
    run: list[AppendJob] = []
    ids: set[str] = set()
    for job in [*jobs, None]:
        if isinstance(job, AppendJob):
            mine = {r.id for a in job.appends for r in a.records}
            if ids.isdisjoint(mine):
                run.append(job)
                ids |= mine
                continue
        if run:
            units.append(_Appends(run))
            run, ids = [], set()
        if isinstance(job, AppendJob):
            run, ids = [job], {r.id for a in job.appends for r in a.records}
        elif job is not None:
            units.append(job)
    return units


class _Failed:
    """A job's own error, as its result in a group that committed the others."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _outcome(result: Any) -> Outcome:
    if isinstance(result, _Failed):
        return result.error, None
    if isinstance(result, Exception):  # its transaction failed, with the job alone in it
        return result, None
    return None, result


def _transaction(conn: Any, begin_sql: str, jobs: Sequence[Job]) -> list[Any]:
    """Run the jobs, each in a savepoint, and commit; raise if the engine rolled back."""
    try:
        conn.execute(begin_sql)
    except Exception as exc:  # busy past the timeout, an I/O error: every job failed
        return [_Failed(exc)] * len(jobs)
    results: list[Any] = []
    try:
        if len(jobs) == 1:
            # One job: the transaction itself is its unit, no savepoint needed.
            results.append(jobs[0](conn))
        else:
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    value = job(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # the engine rolled everything back (disk full, I/O error)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append(_Failed(exc))
                else:
                    conn.execute("RELEASE job")
                    results.append(value)
        conn.execute("COMMIT")
    except Exception:
        _rollback(conn)
        raise
    return results


def _after_commit(conn: Any, jobs: list[Job], outcomes: list[Outcome]) -> list[Outcome]:
    """Run the ``then`` steps of the committed :class:`ThenJob` jobs, each step once."""
    steps: dict[Job, BaseException | None] = {}
    for job, (exc, _value) in zip(jobs, outcomes, strict=True):
        if exc is None and isinstance(job, ThenJob) and job.then not in steps:
            try:
                job.then(conn)
            except Exception as failure:
                _rollback(conn)
                steps[job.then] = failure
            else:
                steps[job.then] = None
    if not any(steps.values()):
        return outcomes
    return [
        (steps[job.then], None)
        if exc is None and isinstance(job, ThenJob) and steps[job.then] is not None
        else (exc, value)
        for job, (exc, value) in zip(jobs, outcomes, strict=True)
    ]


def _rollback(conn: Any) -> None:
    if conn.in_transaction:
        # If even this fails the connection is unusable, and the next BEGIN reports it.
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
