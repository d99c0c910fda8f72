"""Commands an admin sends to running workers over Celery's broadcast channel (remote control),
and the worker's side of them. A worker answers each at once; loading carries on in a thread and
its outcome lands on the version's row and in the next heartbeat. ``InferenceConfig.ready``
imports this module, which registers the commands.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import current_app
from celery.worker.control import control_command

logger = logging.getLogger(__name__)

LOAD = "playground_load"
UNLOAD = "playground_unload"


@control_command(args=[("version_id", int)], signature="<version_id>")  # type: ignore[untyped-decorator]
def playground_load(state: Any, version_id: int) -> dict[str, str]:
    """Load a model version in this worker (in the background)."""

    def run() -> None:
        from django.db import close_old_connections

        from .runner import version_load

        try:
            version_load(version_id=version_id)
        finally:
            close_old_connections()

    threading.Thread(target=run, name=f"load-{version_id}", daemon=True).start()
    return {"ok": "loading"}


@control_command(args=[("key", str)], signature="<slug@label>")  # type: ignore[untyped-decorator]
def playground_unload(state: Any, key: str) -> dict[str, str]:
    """Unload a model version from this worker (after its requests in flight end). In a thread:
    the registry's lock may be held by a load, and this runs on the worker's consumer thread."""
    from .engines import registry

    threading.Thread(target=registry.unload, args=(key,), name=f"unload-{key}", daemon=True).start()
    return {"ok": "unloading"}


def broadcast(command: str, arguments: dict[str, Any], hostnames: list[str]) -> dict[str, str]:
    """Send ``command`` to the workers ``hostnames``; their answers by name ("no answer" for a
    worker that did not reply within 5 seconds)."""
    replies = current_app.control.broadcast(
        command, arguments=arguments, destination=hostnames, reply=True, timeout=5
    )
    answers = {name: "no answer" for name in hostnames}
    for reply in replies or []:
        for name, body in reply.items():
            answers[name] = body.get("ok") or body.get("error") or str(body)
    return answers
