#!/usr/bin/python
# -*- coding: utf-8 -*-
# Licensed under MIT OR Apache-2.0, as orch itself.
"""Ansible module driving orch (a master + workers deployment on systemd)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: orch
short_description: Install, start, restart and stop an orch deployment; maintenance and resume
version_added: "0.1.0"
description:
  - Calls the C(orch) binary with C(--output json) and turns its report into
    Ansible's C(changed), C(failed) and C(diff).
  - C(state=installed) writes the unit files that differ (C(orch install)) and
    reloads systemd only then; C(changed) is orch's own verdict.
  - C(state=started) and C(state=stopped) are C(changed) only when a unit was
    not already in that state (read with C(orch status) before acting).
  - C(state=restarted) and C(state=reloaded) always act (C(orch restart),
    C(orch reload [--or-restart])); with O(changed_only=true) a restart is
    C(orch restart --all --changed), and changed only when orch restarted
    something.
  - C(state=rolled_back) is C(orch rollback), install's path with the unit
    files of a generation kept by an earlier install; C(changed) when a file
    changed or a unit was restarted. Check and diff mode read C(orch plan --rollback).
  - C(state=maintenance) is C(orch stop-for-maintenance) (changed unless the
    deployment was already in maintenance), C(state=resumed) is
    C(orch resume) (changed only when it was in maintenance).
  - Check mode runs C(orch plan) (exit 4 = changes pending) and C(orch status),
    and changes nothing. Diff mode shows the unit files' diff from
    C(orch plan --output json).
  - A non-zero exit fails the task with orch's message and the units that
    failed (their names, systemd's result and the end of their journal).
author:
  - orch contributors
options:
  state:
    description:
      - What to make true of the deployment.
    type: str
    default: installed
    choices: [installed, started, restarted, reloaded, stopped, maintenance, resumed, rolled_back]
  config:
    description:
      - The orch configuration (C(--config)). Without it orch reads
        C($ORCH_CONFIG), C(./orch.toml), then C(/etc/orch/orch.toml).
    type: path
  targets:
    description:
      - Unit names, worker kinds, or V(master), V(workers), V(dependents),
        V(database), for V(started), V(stopped), V(restarted) and V(reloaded).
      - Empty means the whole deployment (C(--all)).
    type: list
    elements: str
    default: []
  rolling:
    description:
      - With V(restarted), the master, then the workers a batch at a time,
        each batch gated on readiness (C(--rolling)). Needs empty O(targets).
    type: bool
    default: false
  batch:
    description:
      - Workers per batch with O(rolling=true) (C(--batch)).
    type: int
    default: 1
  settle:
    description:
      - With O(rolling=true), how long each batch of workers that have twins
        stays ready and watched (still active, not restarted by systemd's
        C(Restart=), probe passing at the end) before the next batch is
        stopped (C(--settle)), e.g. V(5s). Requests a reverse proxy moved to
        the next batch while this one was down then finish before that batch
        stops; set it above your longest request. A batch that fails its
        watch fails the task, the later batches left as they were. None by
        default.
    type: str
  canary:
    description:
      - With V(restarted) and O(rolling=true), restart this many workers
        first and watch them for O(hold) before the rest (C(--canary N));
        V(0) means one of each kind that has twins (C(--canary)). A canary
        that fails (not ready, no longer active, or restarted by systemd's
        C(Restart=) during the hold) fails the task with its journal, and
        the other workers are left as they were.
    type: int
  hold:
    description:
      - How long canaries are watched (C(--hold)), e.g. V(1m). orch's
        default (30s) otherwise.
    type: str
  generation:
    description:
      - With V(rolled_back), the kept generation to put back (C(--to N), see
        C(orch status)); the one before the installed one otherwise.
    type: int
  restart_changed:
    description:
      - With V(rolled_back), then restart the running units whose put-back
        file needs a restart (C(rollback --restart-changed)).
    type: bool
    default: false
  changed_only:
    description:
      - With V(restarted), restart only the running master and workers whose
        installed unit file is newer than their process, e.g. after a
        V(installed) task wrote it (C(orch restart --all --changed)); C(changed)
        only when one was restarted. Not with O(targets). May be combined with
        O(rolling).
      - In check mode, predicted from C(orch plan) (changed when an install
        would write a unit file), since nothing is written then.
    type: bool
    default: false
  or_restart:
    description:
      - With V(reloaded), restart the units that have no C(exec_reload)
        instead of refusing them (C(orch reload --or-restart)). Without it
        orch refuses such units before sending anything, and the task fails.
    type: bool
    default: false
  force:
    description:
      - With V(installed), overwrite unit files edited by hand (C(install --force)).
      - With V(started), V(stopped), V(restarted), V(reloaded), act even though
        the deployment is in maintenance (C(--force)).
    type: bool
    default: false
  reason:
    description:
      - With V(maintenance), why, recorded in orch's state file and shown by
        C(orch status) (C(--reason)).
    type: str
    default: maintenance
  include_database:
    description:
      - With V(maintenance), stop (and mask) the database unit too.
    type: bool
    default: false
  terminate_sessions:
    description:
      - With V(maintenance) and C([database] roles) in the configuration,
        end the sessions of those roles still open in PostgreSQL once the
        stop bound ran out (C(--terminate-sessions), C(pg_terminate_backend)).
        Without it such sessions fail the task and the deployment stays in
        maintenance; running the task again with it completes the proof.
    type: bool
    default: false
  timeout:
    description:
      - Bound on the whole operation (C(--timeout)), e.g. V(2m). orch's
        default otherwise.
    type: str
  host:
    description:
      - Run against a remote host through SSH (C(--host [USER@]HOST[:PORT])).
    type: str
  binary:
    description:
      - The orch program, a name on the remote C(PATH), or a full path.
    type: path
    default: orch
  extra_args:
    description:
      - Global options given to orch before the command, e.g.
        V([--bus, unix:path=/run/dbus/system_bus_socket, --unit-dir, /etc/systemd/system]).
    type: list
    elements: str
    default: []
notes:
  - Check mode and diff mode are supported.
  - Needs only the Python standard library on the managed host, and orch.
  - docs/ansible.md and docs/ansible/orch.yml in orch's repository show a
    complete playbook.
requirements:
  - orch on the managed host
"""

EXAMPLES = r"""
- name: Install the units (changed only when a file changed)
  orch.systemd.orch:
    state: installed
    config: /etc/orch/orch.toml
  notify: Restart deployment

- name: Start every unit, readiness-checked
  orch.systemd.orch:
    state: started

- name: Rolling restart, two workers at a time
  orch.systemd.orch:
    state: restarted
    rolling: true
    batch: 2

- name: Rolling restart, each batch settled for 5 s before the next stops
  orch.systemd.orch:
    state: restarted
    rolling: true
    settle: 5s

- name: Restart only what the last install changed
  orch.systemd.orch:
    state: restarted
    changed_only: true

- name: A new release, one generic worker tried for a minute before the rest
  orch.systemd.orch:
    state: restarted
    rolling: true
    changed_only: true
    canary: 0
    hold: 1m

- name: Put the previous install's unit files back and restart what they change
  orch.systemd.orch:
    state: rolled_back
    restart_changed: true

- name: Reload (SIGHUP through ExecReload=), restarting units without one
  orch.systemd.orch:
    state: reloaded
    or_restart: true

- name: Database upgrade between maintenance and resume
  block:
    - name: Stop for maintenance
      orch.systemd.orch:
        state: maintenance
        reason: postgres 15 -> 16
    - name: Upgrade the cluster
      ansible.builtin.command: pg_upgradecluster -v 16 15 main
    - name: Resume
      orch.systemd.orch:
        state: resumed
  rescue:
    - name: Stay in maintenance
      ansible.builtin.fail:
        msg: "{{ ansible_failed_task.name }} failed; still in maintenance (orch status)"
"""

RETURN = r"""
cmd:
  description: The orch command line run last.
  returned: always
  type: list
  elements: str
  sample: [orch, --output, json, install]
rc:
  description: orch's exit status (0 success, 1 a unit failed, 2 usage, 3 timeout, 4 plan has changes).
  returned: when orch ran
  type: int
  sample: 0
report:
  description:
    - orch's JSON report, as it printed it (for lifecycle commands the
      C(summary) event; for maintenance its C(report)).
  returned: when orch printed JSON
  type: dict
  sample: {"changed": true, "deployment": "hello", "reloaded": true}
plan_rc:
  description: The exit status of C(orch plan), 0 (nothing to do) or 4 (changes pending).
  returned: with V(installed) in check or diff mode
  type: int
  sample: 4
plan:
  description: The units of C(orch plan) (unit, host, path, action, renamed_from, reason), without file contents.
  returned: with V(installed) in check or diff mode
  type: list
  elements: dict
  sample: [{"unit": "hello.service", "action": "update", "host": "local", "path": "/etc/systemd/system/hello.service"}]
units:
  description: The units orch acted on, with their phase (ready, stopped, failed, ...).
  returned: for lifecycle states
  type: list
  elements: dict
  sample: [{"unit": "hello.service", "phase": "ready"}]
failed_units:
  description: The units that did not reach their state, with systemd's result and journal.
  returned: on failure
  type: list
  elements: dict
  sample: [{"unit": "hello-worker-generic-1.service", "phase": "failed", "result": "exit-code"}]
stderr:
  description: What orch wrote on standard error.
  returned: when orch ran
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

LIFECYCLE = ("started", "stopped", "restarted", "reloaded")
VERB = {
    "started": "start",
    "stopped": "stop",
    "restarted": "restart",
    "reloaded": "reload",
    "maintenance": "stop-for-maintenance",
    "resumed": "resume",
    "installed": "install",
    "rolled_back": "rollback",
}
# Phases of a unit that reached what was asked.
DONE = ("ready", "stopped")
# ActiveState values of a unit that is not running.
DOWN = ("inactive", "failed")


def last_json(text):
    """The last JSON object of orch's output (a document, or NDJSON lines)."""
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def parse(line):
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


class Orch(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        binary = module.get_bin_path(p["binary"], required=True) if "/" not in p["binary"] else p["binary"]
        self.base = [binary] + list(p["extra_args"])
        if p["config"]:
            self.base += ["--config", p["config"]]
        if p["host"]:
            self.base += ["--host", p["host"]]
        self.base += ["--output", "json"]
        self.result = dict(changed=False)

    def run(self, args, ok=(0,)):
        cmd = self.base + list(args)
        rc, out, err = self.module.run_command(cmd)
        self.out = out or ""
        self.result.update(cmd=cmd, rc=rc, stderr=err)
        doc = last_json(out)
        if rc not in ok:
            self.fail(args[0], rc, doc, err)
        return doc

    def fail(self, verb, rc, doc, err):
        report = doc or {}
        if "report" in report and isinstance(report["report"], dict):
            report = report["report"]
        units = report.get("units") or []
        failed = [u for u in units if isinstance(u, dict) and u.get("phase") not in DONE + (None,)]
        left = report.get("left") or []
        parts = ["orch %s failed (exit %d)" % (verb, rc)]
        message = (err or "").strip()
        if message:
            parts.append(message)
        if failed:
            parts.append("failed units: " + "; ".join(describe(u) for u in failed))
        if left:
            parts.append("not proven stopped: " + ", ".join(left))
        if report.get("untouched"):
            parts.append("not reached: " + ", ".join(report["untouched"]))
        self.result.update(report=doc, failed_units=failed or [{"unit": u} for u in left])
        if units:
            self.result["units"] = units
        self.module.fail_json(msg="; ".join(parts), **self.result)

    def status(self):
        """unit -> ActiveState, and the maintenance record (None when not in maintenance)."""
        doc = self.run(["status"], ok=(0, 1)) or {}
        states = dict((u.get("unit"), u.get("active_state")) for u in doc.get("units") or [])
        return states, doc.get("maintenance"), doc

    def plan(self, extra=()):
        doc = self.run(["plan"] + list(extra), ok=(0, 4)) or {}
        units = doc.get("units") or []
        self.result["plan"] = [dict((k, v) for k, v in u.items() if k not in ("content", "installed")) for u in units]
        # Ansible fails a task whose result has a non-zero `rc`: 4 is no failure.
        changed = self.result.pop("rc") == 4
        self.result["plan_rc"] = 4 if changed else 0
        diff = []
        for u in units:
            if u.get("action") in (None, "unchanged"):
                continue
            path = u.get("path") or u.get("unit")
            if u.get("host") and u.get("host") != "local":
                path = "%s:%s" % (u["host"], path)
            diff.append(dict(
                before_header=path if "installed" in u else "/dev/null",
                after_header=path if "content" in u else "/dev/null",
                before=u.get("installed", ""),
                after=u.get("content", ""),
            ))
        return changed, diff

    def targets(self):
        t = self.module.params["targets"]
        return list(t) if t else ["--all"]


def describe(u):
    text = u.get("unit", "?")
    facts = [u.get("phase")]
    for key in ("error", "result"):
        if u.get(key):
            facts.append("%s %s" % (key, u[key]) if key == "result" else u[key])
    if u.get("exit_status") is not None:
        facts.append("exit status %s" % u["exit_status"])
    text += " (" + ", ".join(str(f) for f in facts if f) + ")"
    journal = u.get("journal") or []
    if journal:
        text += " journal: " + " | ".join(journal[-3:])
    return text


def predicted(states, targets, wanted_down):
    """Check mode: whether start/stop would change a unit (targets matched by unit name, role or kind)."""
    def selected(unit):
        if not targets:
            # --all never stops the database; the status does not say which it is, so count every unit.
            return True
        stem = unit[:-len(".service")] if unit.endswith(".service") else unit
        return any(t == unit or t == stem or ("-%s-" % t) in unit or unit.endswith("-" + t + ".service")
                   for t in targets)
    for unit, state in states.items():
        if not selected(unit):
            continue
        if wanted_down and state not in DOWN:
            return True
        if not wanted_down and state != "active":
            return True
    return False


def warn_sigkilled(module, doc):
    """An install's or rollback's stale units systemd had to SIGKILL, as a warning."""
    for u in doc.get("units") or []:
        if isinstance(u, dict) and u.get("sigkilled_by_systemd"):
            module.warn("%s: removed after systemd SIGKILLed it (its stop outlived TimeoutStopSec)" % u.get("unit"))


def rollback(module, o, p):
    """state=rolled_back: orch rollback; check and diff mode from plan --rollback."""
    r = o.result
    to = ["--to", str(p["generation"])] if p["generation"] is not None else []
    if module.check_mode or module._diff:
        changed, diff = o.plan(["--rollback"] + to)
        if module._diff:
            r["diff"] = diff
        if module.check_mode:
            r["changed"] = changed
            module.exit_json(**r)
    args = ["rollback"] + to + (["--force"] if p["force"] else [])
    if p["restart_changed"]:
        args.append("--restart-changed")
    last = o.run(args) or {}
    # With --restart-changed the rollback's report is the first line and
    # the restart's summary the last.
    docs = [d for d in (parse(line) for line in o.out.splitlines()) if isinstance(d, dict)]
    doc = next((d for d in docs if "dry_run" in d), last)
    warn_sigkilled(module, doc)
    r["report"] = doc
    r["changed"] = bool(doc.get("changed"))
    if last is not doc:
        r["restart"] = last
        r["units"] = last.get("units") or []
        r["changed"] = r["changed"] or bool(r["units"])
    if not r["changed"]:
        r.pop("diff", None)
    module.exit_json(**r)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="installed", choices=list(VERB)),
            config=dict(type="path"),
            targets=dict(type="list", elements="str", default=[]),
            rolling=dict(type="bool", default=False),
            batch=dict(type="int", default=1),
            changed_only=dict(type="bool", default=False),
            canary=dict(type="int"),
            hold=dict(type="str"),
            settle=dict(type="str"),
            generation=dict(type="int"),
            restart_changed=dict(type="bool", default=False),
            or_restart=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            reason=dict(type="str", default="maintenance"),
            include_database=dict(type="bool", default=False),
            terminate_sessions=dict(type="bool", default=False),
            timeout=dict(type="str"),
            host=dict(type="str"),
            binary=dict(type="path", default="orch"),
            extra_args=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    if p["rolling"] and state != "restarted":
        module.fail_json(msg="rolling is for state=restarted")
    if p["changed_only"] and state != "restarted":
        module.fail_json(msg="changed_only is for state=restarted")
    if p["or_restart"] and state != "reloaded":
        module.fail_json(msg="or_restart is for state=reloaded")
    if p["changed_only"] and p["targets"]:
        module.fail_json(msg="changed_only looks at the whole deployment: leave targets empty")
    if p["rolling"] and p["targets"]:
        module.fail_json(msg="rolling restarts the whole deployment: leave targets empty")
    if p["batch"] < 1:
        module.fail_json(msg="batch must be at least 1")
    if p["settle"] and not p["rolling"]:
        module.fail_json(msg="settle is for state=restarted with rolling=true")
    if p["canary"] is not None and not p["rolling"]:
        module.fail_json(msg="canary is for state=restarted with rolling=true")
    if p["canary"] is not None and p["canary"] < 0:
        module.fail_json(msg="canary must be 0 (one of each kind) or more")
    if p["hold"] and p["canary"] is None:
        module.fail_json(msg="hold is for canary")
    if (p["generation"] is not None or p["restart_changed"]) and state != "rolled_back":
        module.fail_json(msg="generation and restart_changed are for state=rolled_back")

    o = Orch(module)
    r = o.result

    if state == "installed":
        if module.check_mode or module._diff:
            changed, diff = o.plan()
            if module._diff:
                r["diff"] = diff
            if module.check_mode:
                r["changed"] = changed
                module.exit_json(**r)
        args = ["install"] + (["--force"] if p["force"] else [])
        doc = o.run(args) or {}
        warn_sigkilled(module, doc)
        r["report"] = doc
        r["changed"] = bool(doc.get("changed"))
        if not r["changed"]:
            r.pop("diff", None)
        module.exit_json(**r)

    if state == "rolled_back":
        rollback(module, o, p)

    if state in ("maintenance", "resumed"):
        _, maintenance, _ = o.status()
        if module.check_mode:
            r["changed"] = (maintenance is None) == (state == "maintenance")
            module.exit_json(**r)
        if state == "maintenance":
            args = ["stop-for-maintenance", "--reason", p["reason"]]
            if p["include_database"]:
                args.append("--include-database")
            if p["terminate_sessions"]:
                args.append("--terminate-sessions")
            if p["timeout"]:
                args += ["--timeout", p["timeout"]]
            doc = o.run(args) or {}
            report = doc.get("report") or {}
            r["report"] = report
            r["units"] = report.get("units") or []
            terminated = (report.get("sessions") or {}).get("terminated")
            r["changed"] = not report.get("resumed_operation") or bool(
                report.get("killed") or report.get("stopped_again")
                or terminated)
        else:
            args = ["resume"] + (["--timeout", p["timeout"]] if p["timeout"] else [])
            doc = o.run(args) or {}
            r["report"] = doc
            if "report" in doc:
                # Not in maintenance: nothing resumed.
                r["changed"] = bool((doc["report"] or {}).get("was_in_maintenance"))
            else:
                r["units"] = doc.get("units") or []
                r["changed"] = True
        module.exit_json(**r)

    # started, stopped, restarted, reloaded
    states, _, _ = o.status() if state in ("started", "stopped") else ({}, None, None)
    if module.check_mode:
        if state in ("started", "stopped"):
            r["changed"] = predicted(states, p["targets"], state == "stopped")
        elif p["changed_only"]:
            r["changed"], _ = o.plan()
        else:
            r["changed"] = True
        module.exit_json(**r)
    args = [VERB[state]] + o.targets()
    if p["rolling"]:
        args += ["--rolling", "--batch", str(p["batch"])]
        if p["settle"]:
            args += ["--settle", p["settle"]]
    if p["canary"] is not None:
        args += ["--canary"] + ([str(p["canary"])] if p["canary"] > 0 else [])
        if p["hold"]:
            args += ["--hold", p["hold"]]
    if p["changed_only"]:
        args.append("--changed")
    if p["or_restart"]:
        args.append("--or-restart")
    if p["force"]:
        args.append("--force")
    if p["timeout"]:
        args += ["--timeout", p["timeout"]]
    doc = o.run(args) or {}
    r["report"] = doc
    units = doc.get("units") or []
    r["units"] = units
    if state == "started":
        r["changed"] = any(states.get(u.get("unit")) != "active" for u in units)
    elif state == "stopped":
        r["changed"] = any(states.get(u.get("unit"), "active") not in DOWN for u in units)
    elif p["changed_only"]:
        r["changed"] = bool(units)
    else:
        r["changed"] = True
    module.exit_json(**r)


if __name__ == "__main__":
    main()
