"""Cron expressions, as the settings validate them and the scheduler fires them.

Apart from ``bot.scheduler`` so that ``bot.config`` can check a cron setting
without importing the scheduler (which needs ``Deps``, which needs the settings).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

__all__ = ["cron_trigger", "next_fire", "previous_fire"]


def cron_trigger(expr: str, timezone: str) -> CronTrigger:
    """Five cron fields (minute hour day month weekday), or six with seconds first.

    APScheduler ANDs day and weekday, so ``0 9 1-7 * mon`` is the first Monday.
    APScheduler loads here, when a cron is parsed: ``run`` and ``shell`` parse
    none unless a command shows the schedule.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    tz = ZoneInfo(timezone)
    if len(fields) == 5:
        return CronTrigger.from_crontab(expr, timezone=tz)
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=tz,
        )
    raise ValueError(f"{expr!r} has {len(fields)} fields; a cron expression has 5 (or 6)")


def next_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def previous_fire(trigger: CronTrigger, now: datetime, *, lookback: timedelta) -> datetime | None:
    """The latest fire time at or before ``now``, looking back at most ``lookback``."""
    found: datetime | None = None
    current = trigger.get_next_fire_time(None, now - lookback)
    while current is not None and current <= now:
        found = current
        current = trigger.get_next_fire_time(current, current + timedelta(microseconds=1))
    return found
