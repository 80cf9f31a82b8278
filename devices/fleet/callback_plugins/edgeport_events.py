"""Ansible callback plugin used by `edgeport fleet`: one JSON line per task result, per host, into the file named
by $EDGEPORT_FLEET_EVENTS. edgeport reads these lines instead of Ansible's screen output.

Each line: {"host", "task", "play", "status": ok|failed|ignored|unreachable|skipped, "stdout"?, "msg"?,
"edgeport_result"?}: ``stdout`` is what a task printed (the device's answers), ``edgeport_result`` the fact the
playbooks set, ``msg`` the device's or Ansible's own explanation of a failure.
"""
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: edgeport_events
type: notification
short_description: write per-host task results as JSON lines for edgeport fleet
description: Writes one JSON line per task result into the file named by EDGEPORT_FLEET_EVENTS.
requirements: [EDGEPORT_FLEET_EVENTS set in the environment]
"""


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class CallbackModule(CallbackBase):
    """Append one JSON line per runner result (see the module docstring)."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "edgeport_events"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status: str) -> None:
        path = os.environ.get("EDGEPORT_FLEET_EVENTS")
        if not path:
            return
        r = result._result
        event = {"host": result._host.get_name(), "task": result._task.get_name(), "status": status,
                 "play": self._play_name}
        if status == "ok" and isinstance(r.get("stdout"), str):
            event["stdout"] = r["stdout"][-20000:]  # the device's answer (release ids, smoke/bench JSON)
        facts = r.get("ansible_facts") or {}
        for key in ("edgeport_result", "edgeport_rollout"):
            if key in facts:
                event[key] = json.loads(json.dumps(facts[key], default=str))
        if status in ("failed", "unreachable"):
            # the device's own last words first (its scripts explain on stderr), then Ansible's message
            parts = [_text(r[k]).strip() for k in ("stderr", "msg") if r.get(k)]
            event["msg"] = " | ".join(p for p in parts if p)[-3000:]
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")

    _play_name = ""

    def v2_playbook_on_play_start(self, play):
        self._play_name = play.get_name()

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")
