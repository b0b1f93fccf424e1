"""Is this replica the active one? kopf's peering rule, read without ever guessing.

kopf keeps each replica's entry (priority, last seen, lifetime) in the ClusterKopfPeering object and
pauses the lower-priority replicas; pullwatch's own work (the Event stream, the writer) follows the
same rule: active unless a live peer has a higher priority, or another live one the same.

When the object cannot be read (RBAC revoked, API server away) the answer does not change: the
last known one stands, and the reason is said once ("forbidden: get clusterkopfpeerings"), never
"a peer with a higher priority is active" when no peer was seen. A replica that has never read it
stands by until it can.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from .api import Api, ApiError
from .quietlog import Quiet

GROUP, VERSION, PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
log = logging.getLogger("pullwatch.peering")


def active_by_rule(status: Any, priority: int, now: datetime.datetime) -> bool:
    """kopf's rule over the peering object's status."""
    same = 0
    for info in (status or {}).values() if isinstance(status, dict) else ():
        if not isinstance(info, dict):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=datetime.UTC)
            alive = seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
            peer_priority = int(info.get("priority", 0))
        except (KeyError, ValueError, TypeError):
            continue
        if alive and peer_priority > priority:
            return False
        same += alive and peer_priority == priority
    return same <= 1  # one is this replica itself


class Peering:
    def __init__(self, api: Api, name: str, priority: int, quiet: Quiet | None = None):
        self.api, self.name, self.priority = api, name, priority
        self.quiet = quiet or Quiet(log)
        self.active: bool | None = None  # None: never read

    async def check(self) -> bool:
        try:
            obj = await self.api.request(
                "GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}/{self.name}", timeout=5
            )
        except ApiError as exc:
            reason = f"forbidden: {exc.what}" if exc.status == 403 else str(exc)
            if self.active is None:
                self.quiet.warning(
                    "peering unreadable",
                    "cannot tell whether another replica is active (%s); "
                    "standing by until the peering object can be read",
                    reason,
                )
            else:
                self.quiet.warning(
                    "peering unreadable",
                    "cannot read the peering object (%s); staying %s",
                    reason,
                    "active" if self.active else "on standby",
                )
            return bool(self.active)
        self.quiet.recovered("peering unreadable", "reading the peering object works again")
        now = datetime.datetime.now(datetime.UTC)
        self.active = active_by_rule(obj.get("status"), self.priority, now)
        return self.active
