"""Incident, alert-delivery and monitor-run state, kept in the prediction log's database.

The tables use their own :class:`~sqlalchemy.orm.DeclarativeBase` and are created with
``create_all`` on the store's engine (SQLite or PostgreSQL). Concurrency guarantees:

* at most one *open* incident per key: ``open_key`` is unique and equals ``key`` while the
  incident is open (NULL once resolved; NULLs never collide), so two monitor runs that see the
  same breach at once insert one row, and the loser reads the winner's row;
* at most one page per cooldown: :func:`claim_notification` is a single conditional
  ``UPDATE ... WHERE last_notified_at <= threshold``, so only one concurrent caller wins;
* at most one retrain per incident: :func:`claim_retrain` is a conditional ``UPDATE`` too.

All timestamps are naive UTC.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

log = logging.getLogger(__name__)

OPEN = "open"
RESOLVED = "resolved"

# Approval states of an incident's retrain.
APPROVAL_NONE = "none"
APPROVAL_PENDING = "pending"
APPROVAL_APPROVED = "approved"
APPROVAL_AUTO = "auto_approved"
APPROVAL_REJECTED = "rejected"
APPROVAL_EXPIRED = "expired"


def utcnow() -> datetime:
    """Naive UTC now (the one clock of this module)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the orchestration tables (separate from the store's)."""


class IncidentRow(Base):
    """One incident: a breach of one champion version, open until a verdict no longer breaches."""

    __tablename__ = "driftloop_incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=OPEN)
    opened_at: Mapped[datetime] = mapped_column(DateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    notify_count: Mapped[int] = mapped_column(Integer, default=0)
    verdict_json: Mapped[str] = mapped_column(Text, default="{}")
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    monitor_flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    retrain_flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval: Mapped[str] = mapped_column(String(20), default=APPROVAL_NONE)
    approver: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approval_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    retrain_outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_delivery_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AlertDeliveryRow(Base):
    """One delivery attempt series of one message to one target (URL masked)."""

    __tablename__ = "driftloop_alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_key: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    target: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime)


class MonitorRunRow(Base):
    """The verdict of one monitor run (for ``driftloop status``)."""

    __tablename__ = "driftloop_monitor_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    window_start: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(30))
    breached: Mapped[str] = mapped_column(Text, default="")
    report_html: Mapped[str | None] = mapped_column(Text, nullable=True)
    incident_key: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclass(frozen=True)
class Incident:
    """A detached snapshot of an incident row."""

    id: int
    key: str
    model_name: str
    model_version: str | None
    status: str
    opened_at: datetime
    resolved_at: datetime | None
    last_notified_at: datetime | None
    notify_count: int
    verdict: dict[str, Any]
    report_path: str | None
    monitor_flow_run_id: str | None
    retrain_flow_run_id: str | None
    approval: str
    approver: str | None
    approval_reason: str | None
    retrain_outcome: str | None
    last_delivery_error: str | None

    @classmethod
    def from_row(cls, row: IncidentRow) -> Incident:
        """Copy a row out of its session."""
        return cls(
            id=row.id,
            key=row.key,
            model_name=row.model_name,
            model_version=row.model_version,
            status=row.status,
            opened_at=row.opened_at,
            resolved_at=row.resolved_at,
            last_notified_at=row.last_notified_at,
            notify_count=row.notify_count,
            verdict=json.loads(row.verdict_json or "{}"),
            report_path=row.report_path,
            monitor_flow_run_id=row.monitor_flow_run_id,
            retrain_flow_run_id=row.retrain_flow_run_id,
            approval=row.approval,
            approver=row.approver,
            approval_reason=row.approval_reason,
            retrain_outcome=row.retrain_outcome,
            last_delivery_error=row.last_delivery_error,
        )


def incident_key(model_name: str, model_version: str | None) -> str:
    """The identity of "the same breach": one champion version of one registered model."""
    return f"{model_name}@v{model_version or 'none'}"


class StateDB:
    """Incidents, alert deliveries and monitor runs on one SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        """Bind to ``engine`` and create the tables if asked (idempotent)."""
        self.engine = engine
        if create:
            Base.metadata.create_all(engine)

    # -- incidents ---------------------------------------------------------------------------

    def open_incident(
        self,
        key: str,
        *,
        model_name: str,
        model_version: str | None,
        verdict: dict[str, Any],
        report_path: str | None = None,
        monitor_flow_run_id: str | None = None,
        now: datetime | None = None,
    ) -> tuple[Incident, bool]:
        """Open the incident ``key`` unless one is open; returns it and whether this call opened it.

        The existing open incident gets the latest verdict and report path.
        """
        now = now or utcnow()
        verdict_json = json.dumps(verdict, default=str)
        try:
            with Session(self.engine) as session, session.begin():
                row = IncidentRow(
                    key=key,
                    open_key=key,
                    model_name=model_name,
                    model_version=model_version,
                    status=OPEN,
                    opened_at=now,
                    notify_count=0,
                    verdict_json=verdict_json,
                    report_path=report_path,
                    monitor_flow_run_id=monitor_flow_run_id,
                    approval=APPROVAL_NONE,
                )
                session.add(row)
                session.flush()
                return Incident.from_row(row), True
        except IntegrityError:
            log.debug("incident %s already open; updating its verdict", key)
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(IncidentRow)
                .where(IncidentRow.open_key == key)
                .values(verdict_json=verdict_json, report_path=report_path)
            )
            row = session.scalars(select(IncidentRow).where(IncidentRow.open_key == key)).one()
            return Incident.from_row(row), False

    def get_open(self, key: str) -> Incident | None:
        """The open incident ``key``, if any."""
        with Session(self.engine) as session:
            row = session.scalars(select(IncidentRow).where(IncidentRow.open_key == key)).first()
            return Incident.from_row(row) if row else None

    def get(self, incident_id: int) -> Incident | None:
        """An incident by id."""
        with Session(self.engine) as session:
            row = session.get(IncidentRow, incident_id)
            return Incident.from_row(row) if row else None

    def latest(self, key: str) -> Incident | None:
        """The most recent incident with ``key`` (open or not)."""
        with Session(self.engine) as session:
            row = session.scalars(
                select(IncidentRow).where(IncidentRow.key == key).order_by(IncidentRow.id.desc())
            ).first()
            return Incident.from_row(row) if row else None

    def by_retrain_run(self, flow_run_id: str) -> Incident | None:
        """The incident whose retrain is the flow run ``flow_run_id``."""
        with Session(self.engine) as session:
            row = session.scalars(
                select(IncidentRow)
                .where(IncidentRow.retrain_flow_run_id == flow_run_id)
                .order_by(IncidentRow.id.desc())
            ).first()
            return Incident.from_row(row) if row else None

    def open_incidents(self, model_name: str | None = None) -> list[Incident]:
        """Every open incident (of one model if given), oldest first."""
        stmt = select(IncidentRow).where(IncidentRow.status == OPEN).order_by(IncidentRow.id)
        if model_name is not None:
            stmt = stmt.where(IncidentRow.model_name == model_name)
        with Session(self.engine) as session:
            return [Incident.from_row(r) for r in session.scalars(stmt)]

    def pending_approvals(self) -> list[Incident]:
        """Incidents whose retrain waits for a human."""
        stmt = (
            select(IncidentRow)
            .where(IncidentRow.approval == APPROVAL_PENDING)
            .order_by(IncidentRow.id)
        )
        with Session(self.engine) as session:
            return [Incident.from_row(r) for r in session.scalars(stmt)]

    def claim_notification(
        self,
        key: str,
        *,
        cooldown_s: float,
        remind_every_s: float,
        now: datetime | None = None,
    ) -> str | None:
        """Atomically decide whether the open incident ``key`` pages now.

        Returns ``"breach"`` for the first page, ``"reminder"`` once ``max(cooldown_s,
        remind_every_s)`` has passed since the last page, else None (deduplicated). One
        conditional UPDATE: of two concurrent callers only one gets a non-None answer.
        """
        now = now or utcnow()
        interval = max(float(cooldown_s), float(remind_every_s))
        threshold = now - timedelta(seconds=interval)
        with Session(self.engine) as session, session.begin():
            first = session.execute(
                update(IncidentRow)
                .where(IncidentRow.open_key == key, IncidentRow.last_notified_at.is_(None))
                .values(last_notified_at=now, notify_count=IncidentRow.notify_count + 1)
            )
            if first.rowcount == 1:
                return "breach"
            again = session.execute(
                update(IncidentRow)
                .where(IncidentRow.open_key == key, IncidentRow.last_notified_at <= threshold)
                .values(last_notified_at=now, notify_count=IncidentRow.notify_count + 1)
            )
            return "reminder" if again.rowcount == 1 else None

    def resolve_open(self, model_name: str, *, now: datetime | None = None) -> list[Incident]:
        """Resolve every open incident of ``model_name``; returns those this call resolved."""
        now = now or utcnow()
        resolved: list[Incident] = []
        with Session(self.engine) as session, session.begin():
            rows = session.scalars(
                select(IncidentRow).where(
                    IncidentRow.model_name == model_name, IncidentRow.status == OPEN
                )
            ).all()
            for row in rows:
                result = session.execute(
                    update(IncidentRow)
                    .where(IncidentRow.id == row.id, IncidentRow.status == OPEN)
                    .values(status=RESOLVED, open_key=None, resolved_at=now)
                )
                if result.rowcount == 1:
                    session.refresh(row)
                    resolved.append(Incident.from_row(row))
        return resolved

    def claim_retrain(self, key: str, *, approval: str) -> bool:
        """Atomically mark the open incident's retrain as started; False if already started."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(IncidentRow)
                .where(IncidentRow.open_key == key, IncidentRow.approval == APPROVAL_NONE)
                .values(approval=approval)
            )
            return result.rowcount == 1

    def update_incident(self, incident_id: int, **values: Any) -> None:
        """Set columns of one incident (retrain run id, approval, outcome, ...)."""
        allowed = {c.name for c in IncidentRow.__table__.columns} - {"id", "key", "open_key"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown incident columns: {sorted(unknown)}")
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(IncidentRow).where(IncidentRow.id == incident_id).values(**values)
            )

    # -- deliveries and runs -----------------------------------------------------------------

    def record_delivery(
        self,
        *,
        incident_key: str,
        kind: str,
        target: str,
        ok: bool,
        attempts: int,
        error: str | None,
        now: datetime | None = None,
    ) -> None:
        """Log one delivery (``target`` must already be masked)."""
        with Session(self.engine) as session, session.begin():
            session.add(
                AlertDeliveryRow(
                    incident_key=incident_key,
                    kind=kind,
                    target=target,
                    ok=ok,
                    attempts=attempts,
                    error=error,
                    at=now or utcnow(),
                )
            )

    def deliveries(self, incident_key: str | None = None) -> list[dict[str, Any]]:
        """Delivery log rows as dicts, oldest first."""
        stmt = select(AlertDeliveryRow).order_by(AlertDeliveryRow.id)
        if incident_key is not None:
            stmt = stmt.where(AlertDeliveryRow.incident_key == incident_key)
        with Session(self.engine) as session:
            return [
                {
                    "incident_key": r.incident_key,
                    "kind": r.kind,
                    "target": r.target,
                    "ok": r.ok,
                    "attempts": r.attempts,
                    "error": r.error,
                    "at": r.at,
                }
                for r in session.scalars(stmt)
            ]

    def record_monitor_run(
        self,
        *,
        model_name: str,
        model_version: str | None,
        status: str,
        breached: list[str],
        window_start: datetime | None,
        window_end: datetime | None,
        report_html: str | None,
        flow_run_id: str | None,
        incident_key: str | None,
        now: datetime | None = None,
    ) -> None:
        """Store one monitor verdict."""
        with Session(self.engine) as session, session.begin():
            session.add(
                MonitorRunRow(
                    at=now or utcnow(),
                    flow_run_id=flow_run_id,
                    model_name=model_name,
                    model_version=model_version,
                    window_start=_naive(window_start),
                    window_end=_naive(window_end),
                    status=status,
                    breached=",".join(breached),
                    report_html=report_html,
                    incident_key=incident_key,
                )
            )

    def recent_monitor_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest monitor verdicts, newest first."""
        stmt = select(MonitorRunRow).order_by(MonitorRunRow.id.desc()).limit(limit)
        with Session(self.engine) as session:
            return [
                {
                    "at": r.at,
                    "model_version": r.model_version,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                    "status": r.status,
                    "breached": r.breached,
                    "report_html": r.report_html,
                    "incident_key": r.incident_key,
                }
                for r in session.scalars(stmt)
            ]

    def count_incidents(self) -> int:
        """Number of incidents ever opened."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(IncidentRow)) or 0)


def _naive(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts
