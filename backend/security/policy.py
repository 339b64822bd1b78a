"""The authorization policy: which apps may use which app. Pure data and two questions.

Opt-in. With no rules every app may call and manage every other app served by this
server (Dapr's model inside a namespace). Rules are per target app:
- `callers`: apps whose workflows may schedule activities, child and detached workflows on it;
- `manage`: per app, the operations it may perform on the target's instances through
  `router.targetAppID` (read, raise, suspend, resume, terminate, purge, rerun, start).
An app always may call and manage itself. "*" stands for any app, or any operation.
An app without rules follows `default_allow`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OPERATIONS = ("read", "raise", "suspend", "resume", "terminate", "purge", "rerun", "start")
ANY = "*"


@dataclass(frozen=True, kw_only=True)
class AppRules:
    callers: frozenset[str] | None = None  # None: the default decides
    manage: Mapping[str, frozenset[str]] | None = None  # app -> operations; None: the default decides


@dataclass(frozen=True, kw_only=True)
class Policy:
    default_allow: bool = True
    apps: Mapping[str, AppRules] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """No rule restricts anything."""
        return self.default_allow and not any(
            r.callers is not None or r.manage is not None for r in self.apps.values()
        )

    def may_call(self, source: str, target: str) -> bool:
        """May a workflow of `source` run activities or child workflows on `target`?"""
        if source == target:
            return True
        rules = self.apps.get(target)
        if rules is None or rules.callers is None:
            return self.default_allow
        return ANY in rules.callers or source in rules.callers

    def may_manage(self, source: str, target: str, operation: str) -> bool:
        """May a client of `source` perform `operation` on an instance of `target`?"""
        if source == target:
            return True
        rules = self.apps.get(target)
        if rules is None or rules.manage is None:
            return self.default_allow
        allowed = rules.manage.get(source, frozenset()) | rules.manage.get(ANY, frozenset())
        return ANY in allowed or operation in allowed
