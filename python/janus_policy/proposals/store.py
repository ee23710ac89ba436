"""The proposal store: one SQLite file in the state dir, in WAL mode, its schema
versioned by `PRAGMA user_version` and upgraded by the migrations below.

Every change goes through `Store.write()`, a `BEGIN IMMEDIATE` transaction:
writers from any number of processes are serialized by SQLite itself, and a
state change is an `UPDATE … WHERE state = <expected>`, so of two processes
racing to approve or start the same proposal exactly one changes it and the
other gets `Conflict`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from janus_policy.errors import JanusError
from janus_policy.proposals.states import STATES, Conflict, check

DB_NAME = "janus.db"
#: The shortest id prefix taken for an id ("p-" and 4 more).
MIN_PREFIX = 6
#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 10.0

MIGRATIONS: tuple[str, ...] = (
    # 1: proposals, their transitions (with the audit high-water mark), budgets.
    """
    CREATE TABLE proposals (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        source TEXT NOT NULL,
        proposal TEXT NOT NULL,
        tool TEXT NOT NULL,
        action_type TEXT NOT NULL,
        mission TEXT,
        fingerprint TEXT NOT NULL,
        duplicate_of TEXT,
        decision TEXT,
        policy_digest TEXT,
        reason TEXT,
        approvers TEXT,
        expires_at REAL,
        on_expiry TEXT,
        approved_by TEXT,
        approval_note TEXT,
        approval_expires_at REAL,
        executions INTEGER NOT NULL DEFAULT 0,
        sandbox_pid INTEGER,
        started_at REAL,
        finished_at REAL,
        outcome TEXT
    );
    CREATE INDEX proposals_by_state ON proposals (state, seq);
    CREATE INDEX proposals_by_fingerprint ON proposals (fingerprint, created_at);
    CREATE TABLE transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        at REAL NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT,
        audited INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX transitions_by_proposal ON transitions (proposal_id, seq);
    CREATE INDEX transitions_unaudited ON transitions (audited) WHERE audited = 0;
    CREATE TABLE budget_spend (
        budget TEXT NOT NULL,
        scope TEXT NOT NULL,
        at REAL NOT NULL,
        approvals INTEGER NOT NULL,
        risk_points INTEGER NOT NULL,
        proposal_id TEXT NOT NULL
    );
    CREATE INDEX budget_spend_window ON budget_spend (budget, scope, at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_JSON_COLUMNS = ("proposal", "decision", "outcome")


class StoreError(JanusError):
    """The store cannot be used: not a database, locked, or too new."""


@dataclass(frozen=True)
class Record:
    """One proposal as the store knows it."""

    id: str
    seq: int
    state: str
    created_at: float
    updated_at: float
    source: str
    proposal: dict[str, Any]
    tool: str
    action_type: str
    mission: str | None
    fingerprint: str
    duplicate_of: str | None
    decision: dict[str, Any] | None
    policy_digest: str | None
    reason: str | None
    approvers: str | None
    expires_at: float | None
    on_expiry: str | None
    approved_by: str | None
    approval_note: str | None
    approval_expires_at: float | None
    executions: int
    sandbox_pid: int | None
    started_at: float | None
    finished_at: float | None
    outcome: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Transition:
    seq: int
    proposal_id: str
    at: float
    from_state: str | None
    to_state: str
    actor: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_id(now: float) -> str:
    """Sortable by creation time, unique without coordination."""
    return f"p-{int(now * 1000):011x}{secrets.token_hex(3)}"


def _record(row: sqlite3.Row) -> Record:
    data = dict(row)
    for col in _JSON_COLUMNS:
        if data[col] is not None:
            try:
                data[col] = json.loads(data[col])
            except (ValueError, RecursionError) as e:  # the store wrote JSON: it is damaged
                raise StoreError(
                    f"proposal {data['id']}: {col} is not readable JSON ({e})"
                ) from None
    return Record(**data)


def _transition(row: sqlite3.Row) -> Transition:
    data = dict(row)
    del data["audited"]
    return Transition(**data)


class Tx:
    """The operations of one write transaction."""

    def __init__(self, db: sqlite3.Connection, now: float) -> None:
        self.db = db
        self.now = now
        self.transitions: list[int] = []

    def get(self, proposal_id: str) -> Record:
        return _get(self.db, proposal_id)

    def insert(
        self,
        proposal: dict[str, Any],
        *,
        source: str,
        fingerprint: str,
        state: str = "proposed",
        reason: str | None = None,
        duplicate_of: str | None = None,
    ) -> str:
        pid = new_id(self.now)
        self.db.execute(
            "INSERT INTO proposals (id, state, created_at, updated_at, source, proposal, tool,"
            " action_type, mission, fingerprint, duplicate_of, reason)"
            " VALUES (?, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pid,
                self.now,
                self.now,
                source,
                json.dumps(proposal, sort_keys=True),
                proposal["tool"],
                proposal["action_type"],
                proposal.get("mission"),
                fingerprint,
                duplicate_of,
                reason,
            ),
        )
        self._log(pid, None, "proposed", source, None)
        if state != "proposed":
            self.move(pid, "proposed", state, source, reason)
        return pid

    def move(
        self,
        proposal_id: str,
        expected: str | Sequence[str],
        to: str,
        actor: str,
        reason: str | None = None,
        **fields: Any,
    ) -> str:
        """Moves a proposal that is in `expected` to `to`; returns the state it
        left. Conflict if it is no longer in `expected`, IllegalTransition if
        the lifecycle forbids the move."""
        allowed = (expected,) if isinstance(expected, str) else tuple(expected)
        current = self.get(proposal_id).state
        if current not in allowed:
            raise Conflict(
                f"proposal {proposal_id} is {current} now, not {' or '.join(allowed)}: "
                f"someone else changed it first; nothing done"
            )
        check(proposal_id, current, to)
        sets = {"state": to, "updated_at": self.now, "reason": reason, **fields}
        for col in _JSON_COLUMNS:
            if col in sets and sets[col] is not None:
                sets[col] = json.dumps(sets[col], sort_keys=True, default=str)
        assignments = ", ".join(f"{k} = ?" for k in sets)
        cur = self.db.execute(
            f"UPDATE proposals SET {assignments} WHERE id = ? AND state = ?",
            (*sets.values(), proposal_id, current),
        )
        if cur.rowcount != 1:  # cannot happen inside BEGIN IMMEDIATE; fail loudly if it does
            raise Conflict(f"proposal {proposal_id} changed during the transaction")
        self._log(proposal_id, current, to, actor, reason)
        return current

    def update(self, proposal_id: str, **fields: Any) -> None:
        """Changes fields without a state change (an escalation renewed, the
        pid of a sandbox)."""
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE proposals SET {assignments}, updated_at = ? WHERE id = ?",
            (*fields.values(), self.now, proposal_id),
        )

    def _log(
        self, proposal_id: str, from_state: str | None, to: str, actor: str, reason: str | None
    ) -> None:
        cur = self.db.execute(
            "INSERT INTO transitions (proposal_id, at, from_state, to_state, actor, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (proposal_id, self.now, from_state, to, actor, reason),
        )
        assert cur.lastrowid is not None
        self.transitions.append(cur.lastrowid)

    def spent(self, budget: str, scope: str, window_s: float) -> tuple[int, int]:
        """(approvals, risk points) spent from a budget in the window."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(approvals), 0), COALESCE(SUM(risk_points), 0)"
            " FROM budget_spend WHERE budget = ? AND scope = ? AND at > ?",
            (budget, scope, self.now - window_s),
        ).fetchone()
        return int(row[0]), int(row[1])

    def spend(self, budget: str, scope: str, risk_points: int, proposal_id: str) -> None:
        self.db.execute(
            "INSERT INTO budget_spend VALUES (?, ?, ?, 1, ?, ?)",
            (budget, scope, self.now, risk_points, proposal_id),
        )

    def find_duplicate(self, fingerprint: str, window_s: float) -> str | None:
        """The first proposal with this fingerprint in the window that was not
        itself a duplicate."""
        # Not one rejected before the policy saw it (the relief valve, a
        # refusal): that says nothing about the action, so it may come again.
        row = self.db.execute(
            "SELECT id FROM proposals WHERE fingerprint = ? AND created_at > ?"
            " AND duplicate_of IS NULL AND NOT (state = 'rejected' AND decision IS NULL)"
            " ORDER BY seq LIMIT 1",
            (fingerprint, self.now - window_s),
        ).fetchone()
        return str(row[0]) if row else None

    def ids_in(self, states: Sequence[str]) -> list[str]:
        marks = ",".join("?" * len(states))
        query = f"SELECT id FROM proposals WHERE state IN ({marks}) ORDER BY seq"
        return [r[0] for r in self.db.execute(query, tuple(states))]

    def count(self, states: Sequence[str]) -> int:
        marks = ",".join("?" * len(states))
        query = f"SELECT COUNT(*) FROM proposals WHERE state IN ({marks})"
        return int(self.db.execute(query, tuple(states)).fetchone()[0])


def _get(db: sqlite3.Connection, proposal_id: str) -> Record:
    row = db.execute("SELECT * FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
    if row is None:
        raise StoreError(f"no proposal {proposal_id!r}")
    return _record(row)


class Store:
    """The proposals of one state dir. Safe to share between threads (calls
    are serialized); any number of processes may open the same file."""

    def __init__(self, state_dir: Path | str, *, timeout_s: float | None = None) -> None:
        self.path = Path(state_dir) / DB_NAME
        self._lock = threading.RLock()
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S if timeout_s is None else timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as e:
            raise self._error(e) from None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot open the store: {e}") from None

    def _error(self, e: sqlite3.Error) -> StoreError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"{self.path}: the database is locked by another process and stayed locked; "
                "retry, or find the process holding it (fuser)"
            )
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            return StoreError(
                f"{self.path}: not a usable proposal store ({text}); restore it "
                "from a backup, or move it aside to start an empty one"
            )
        return StoreError(f"{self.path}: {text}")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this janus-policy "
                f"understands ({SCHEMA_VERSION}); upgrade janus-policy"
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated.
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            for n in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[n].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One atomic write transaction; everything in it happens or nothing."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._error(e) from None
            tx = Tx(self._db, time.time())
            try:
                yield tx
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise self._error(e) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk, an I/O error).
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(query, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise self._error(e) from None

    def get(self, proposal_id: str) -> Record:
        """By id, or by a unique prefix of one (as `git` takes commits) of at
        least MIN_PREFIX characters."""
        if len(proposal_id) < MIN_PREFIX:
            raise StoreError(
                f"{proposal_id!r}: give a proposal id, or at least {MIN_PREFIX} characters of one"
            )
        rows = self._read(
            "SELECT * FROM proposals WHERE id >= ? AND id < ? ORDER BY seq LIMIT 2",
            (proposal_id, proposal_id + "\uffff"),
        )
        if len(rows) == 1 or (rows and rows[0]["id"] == proposal_id):
            return _record(rows[0])
        if rows:
            raise StoreError(f"{proposal_id!r} is the start of several proposal ids; give more")
        raise StoreError(f"no proposal {proposal_id!r} in {self.path}")

    def proposals(
        self,
        *,
        states: Sequence[str] = (),
        since: float | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[Record]:
        for s in states:
            if s not in STATES:
                raise StoreError(f"unknown state {s!r}; states: {', '.join(STATES)}")
        where: list[str] = ["1"]
        params: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += list(states)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        order = "DESC" if newest_first else "ASC"
        query = f"SELECT * FROM proposals WHERE {' AND '.join(where)} ORDER BY seq {order}"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [_record(r) for r in self._read(query, params)]

    def ids(self, state: str, *, before: float | None = None, column: str = "seq") -> list[str]:
        """Ids of proposals in `state`, oldest first; with `before`, only
        those whose `column` (a time) is earlier."""
        if before is None:
            rows = self._read("SELECT id FROM proposals WHERE state = ? ORDER BY seq", (state,))
        else:
            rows = self._read(
                f"SELECT id FROM proposals WHERE state = ? AND {column} < ? ORDER BY seq",
                (state, before),
            )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) FROM proposals GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    def shed(self) -> int:
        """How many proposals the relief valve has rejected."""
        rows = self._read("SELECT COUNT(*) FROM proposals WHERE reason LIKE 'relief_valve:%'")
        return int(rows[0][0])

    def transitions(self, proposal_id: str | None = None) -> list[Transition]:
        if proposal_id is None:
            rows = self._read("SELECT * FROM transitions ORDER BY seq")
        else:
            rows = self._read(
                "SELECT * FROM transitions WHERE proposal_id = ? ORDER BY seq", (proposal_id,)
            )
        return [_transition(r) for r in rows]

    def unaudited(
        self, seqs: Sequence[int] | None = None, *, before: float | None = None
    ) -> list[Transition]:
        """Transitions not yet in the audit log: these `seqs`, or all of them
        (made before `before`, if given)."""
        if seqs is None:
            rows = self._read(
                "SELECT * FROM transitions WHERE audited = 0 AND at < ? ORDER BY seq",
                (before if before is not None else float("inf"),),
            )
        else:
            marks = ",".join("?" * len(seqs))
            rows = self._read(
                f"SELECT * FROM transitions WHERE audited = 0 AND seq IN ({marks}) ORDER BY seq",
                seqs,
            )
        return [_transition(r) for r in rows]

    def mark_audited(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self.write() as tx:
            marks = ",".join("?" * len(seqs))
            tx.db.execute(
                f"UPDATE transitions SET audited = 1 WHERE seq IN ({marks})",
                tuple(seqs),
            )
