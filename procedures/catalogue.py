"""The procedure catalogue: one line per procedure module.

Order matters only for reading: ``help`` lists the commands, ``runbook`` its
lines and ``schedule`` the jobs in this order. A new procedure is a module
declaring its ``SPEC`` plus one line here (see the README's layout section).
"""

from __future__ import annotations

from bot.catalogue import Catalogue
from procedures import (
    backend_down,
    backup,
    backup_freshness,
    backups,
    capacity,
    change,
    compliance,
    db,
    diagnose,
    health,
    high_error_rate,
    incident,
    logs,
    memory,
    metrics,
    monthly,
    morning_summary,
    perf,
    restart,
    restore,
    retention,
    runbook,
    schedule,
    silence,
    sla,
    slow_responses,
    status,
    terminate,
    vacuum,
    weekly,
)
from procedures import help as help_

__all__ = ["CATALOGUE"]

CATALOGUE = Catalogue(
    specs=(
        help_.SPEC,
        health.SPEC,
        status.SPEC,
        logs.SPEC,
        db.SPEC,
        metrics.SPEC,
        backups.SPEC,
        restart.SPEC,
        incident.SPEC,
        silence.SPEC,
        morning_summary.SPEC,
        backup_freshness.SPEC,
        vacuum.SPEC,
        schedule.SPEC,
        runbook.SPEC,
        backend_down.SPEC,
        slow_responses.SPEC,
        high_error_rate.SPEC,
        weekly.SPEC,
        monthly.SPEC,
        terminate.SPEC,
        backup.SPEC,
        sla.SPEC,
        retention.SPEC,
        capacity.SPEC,
        compliance.SPEC,
        change.SPEC,
        restore.SPEC,
        diagnose.SPEC,
        memory.SPEC,
        perf.SPEC,
    ),
    default_command="help",
    manual=runbook.MANUAL,
)
