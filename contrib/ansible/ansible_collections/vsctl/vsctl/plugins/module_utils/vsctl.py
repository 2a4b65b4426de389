# -*- coding: utf-8 -*-
# Shared code for the vsctl.vsctl modules.
#
# The modules never reimplement vsctl: they write guest files and let the
# vsctl binary validate, plan and apply, reading its versioned JSON output
# (`format_version`, `plan.guests[].action`, `result.changed`,
# `result.guests[].status`). What this file must never do: edit state under
# vsctl's state directory, or leave an invalid guest file in guests.d (an
# invalid file stops every later `vsctl apply` on the host, the boot-time one
# included), which is why every change is first planned against a scratch copy
# of guests.d.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import os
import re
import shutil
import tempfile

# The JSON layout these modules understand. A newer vsctl that bumps it must
# be met by a newer collection rather than misread.
FORMAT_VERSION = 1

HEADER = "# Managed by {tool}; local edits are overwritten.\n"

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# Order of sections in a rendered guest file: the order of vsctl.toml(5).
_TOP_KEYS = ("template", "hostname", "state", "protect")
_TABLES = ("network", "limits", "disk", "rootfs", "init", "security", "env")


class VsctlError(Exception):
    """A vsctl invocation failed; `data` holds its JSON output when it gave any."""

    def __init__(self, msg, data=None, rc=None, stderr=None):
        super(VsctlError, self).__init__(msg)
        self.data = data
        self.rc = rc
        self.stderr = stderr


def valid_name(name):
    return bool(_NAME.match(name or ""))


def _toml_string(value):
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key):
    key = str(key)
    return key if _BARE_KEY.match(key) else _toml_string(key)


def toml_value(value):
    """Encode one TOML value (inline form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("%r is not a finite number" % value)
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]
        if not items:
            return "{}"
        return "{ " + ", ".join("%s = %s" % (_toml_key(k), toml_value(v)) for k, v in items) + " }"
    raise ValueError("cannot write %r (%s) to a guest file" % (value, type(value).__name__))


def _prune(value):
    """Drop unset (None) keys recursively so the file holds only what was given."""
    if isinstance(value, dict):
        return dict((k, _prune(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def render_guest(spec, tool="Ansible"):
    """Render a guest file from a dict shaped like vsctl.toml(5).

    Deterministic: the same spec always gives the same bytes, so rerunning a
    task never rewrites the file.
    """
    spec = _prune(spec)
    lines = [HEADER.format(tool=tool)]
    for key in _TOP_KEYS:
        if key in spec:
            lines.append("%s = %s\n" % (key, toml_value(spec[key])))
    for table in _TABLES:
        body = spec.get(table)
        if not body:
            continue
        lines.append("\n[%s]\n" % table)
        for key, value in body.items():
            lines.append("%s = %s\n" % (_toml_key(key), toml_value(value)))
    for mount in spec.get("mounts") or []:
        lines.append("\n[[mounts]]\n")
        for key, value in mount.items():
            lines.append("%s = %s\n" % (_toml_key(key), toml_value(value)))
    return "".join(lines)


_STATE_LINE = re.compile(r"^(\s*state\s*=\s*)(\"[^\"]*\"|'[^']*')(.*)$")
_TABLE_LINE = re.compile(r"^\s*\[")


def set_run_state(text, state):
    """Make the top-level `state` key of a user-supplied guest file say `state`.

    Replaces an existing top-level `state = ...` line, or adds one as the first
    line (top-level keys must come before the first table).
    """
    lines = text.splitlines(True)
    for i, line in enumerate(lines):
        if _TABLE_LINE.match(line):
            break
        m = _STATE_LINE.match(line.rstrip("\n"))
        if m:
            end = "\n" if line.endswith("\n") else ""
            lines[i] = '%s"%s"%s%s' % (m.group(1), state, m.group(3), end)
            return "".join(lines)
    return 'state = "%s"\n' % state + text


def atomic_write(path, text):
    """Replace `path` with `text` so readers see the old or the new file, never half of one."""
    directory = os.path.dirname(path) or "."
    # The temporary name must not end in .toml: a concurrent `vsctl apply`
    # would read it as a guest.
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_text(path):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except IOError as e:
        if e.errno == 2:
            return None
        raise


def format_errors(data, replace=None):
    """One line per validation error: file:line:column: message (help)."""
    lines = []
    for err in (data or {}).get("errors") or []:
        where = str(err.get("file", ""))
        if replace:
            where = where.replace(replace[0], replace[1])
        if err.get("line"):
            where += ":%s:%s" % (err.get("line"), err.get("column"))
        line = "%s: %s" % (where, err.get("message"))
        if err.get("help"):
            line += " (%s)" % err.get("help")
        lines.append(line)
    return "\n".join(lines)


def plan_text(plan):
    """A short human rendering of a JSON plan, for diff output."""
    out = []
    for guest in (plan or {}).get("guests") or []:
        action = guest.get("action")
        if action == "noop" and not guest.get("changes"):
            continue
        out.append("%s (%s)" % (guest.get("name"), action))
        for change in guest.get("changes") or []:
            out.append(
                "    ~ %s: %s -> %s  [%s]"
                % (
                    change.get("field"),
                    json.dumps(change.get("before")),
                    json.dumps(change.get("after")),
                    change.get("class"),
                )
            )
        if guest.get("blocked"):
            out.append("    BLOCKED: %s" % guest.get("blocked"))
        for note in guest.get("unsupported") or []:
            out.append("    note: %s" % note)
    for template in (plan or {}).get("templates_to_build") or []:
        out.append("template %s (build)" % (template if isinstance(template, str) else json.dumps(template)))
    return "\n".join(out) + ("\n" if out else "")


def blocked_guests(plan):
    return [g for g in (plan or {}).get("guests") or [] if g.get("blocked")]


class Vsctl(object):
    """How to call one vsctl installation.

    `run` is a callable(argv) -> (rc, stdout, stderr): AnsibleModule.run_command
    in modules, subprocess in Salt.
    """

    def __init__(self, run, binary="vsctl", root=None, config=None, guests_dir=None):
        self._run = run
        self.binary = binary
        self.root = root
        self.config = config
        self.guests_dir = guests_dir or os.path.join(root or "/", "etc/vsctl/guests.d")

    def argv(self, args, guests_dir=None):
        argv = [self.binary]
        if self.root:
            argv += ["--root", self.root]
        if self.config:
            argv += ["--config", self.config]
        # Always explicit, so the files written here are the files vsctl reads.
        argv += ["--guests-dir", guests_dir or self.guests_dir]
        return argv + list(args)

    def call(self, args, guests_dir=None, codes=(0,)):
        """Run vsctl with --output json; return (rc, data). Raises VsctlError."""
        rc, out, err = self._run(self.argv(list(args) + ["--output", "json"], guests_dir))
        data = None
        if out and out.strip():
            try:
                data = json.loads(out)
            except ValueError:
                data = None
        if rc not in codes:
            msg = "vsctl %s failed (exit %s)" % (args[0], rc)
            detail = format_errors(data, (guests_dir, self.guests_dir) if guests_dir else None)
            if detail:
                msg += ":\n" + detail
            elif err and err.strip():
                msg += ": " + err.strip()
            raise VsctlError(msg, data=data, rc=rc, stderr=err)
        if data is None:
            raise VsctlError("vsctl %s printed no JSON: %s" % (args[0], (err or out or "").strip()), rc=rc, stderr=err)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise VsctlError(
                "vsctl speaks JSON format_version %r; this collection understands %d" % (version, FORMAT_VERSION),
                data=data,
                rc=rc,
            )
        return rc, data

    def plan(self, names=(), prune=False, purge=False, recreate=(), guests_dir=None):
        """(pending, plan): pending is True when applying would change something."""
        args = ["plan", "--detailed-exitcode"] + _flags(prune, purge, recreate) + list(names)
        rc, data = self.call(args, guests_dir=guests_dir, codes=(0, 2))
        return rc == 2, data

    def apply(self, names=(), prune=False, purge=False, recreate=()):
        args = ["apply", "--detailed-exitcode"] + _flags(prune, purge, recreate) + list(names)
        rc, data = self.call(args, codes=(0, 2))
        return rc == 2, data

    def staged_plan(self, name, text, prune=False, purge=False, recreate=()):
        """Plan as if guests.d/NAME.toml held `text` (None: removed), touching nothing.

        Copies the guest files to a scratch directory and points `--guests-dir`
        there; the state directory is only read by `vsctl plan`.
        """
        scratch = tempfile.mkdtemp(prefix="vsctl-stage-")
        try:
            if os.path.isdir(self.guests_dir):
                for entry in os.listdir(self.guests_dir):
                    src = os.path.join(self.guests_dir, entry)
                    if entry.endswith(".toml") and os.path.isfile(src):
                        shutil.copyfile(src, os.path.join(scratch, entry))
            target = os.path.join(scratch, name + ".toml")
            if text is None:
                if os.path.exists(target):
                    os.unlink(target)
            else:
                with open(target, "w") as handle:
                    handle.write(text)
            return self.plan([name], prune=prune, purge=purge, recreate=recreate, guests_dir=scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def guest_file(self, name):
        return os.path.join(self.guests_dir, name + ".toml")


def _flags(prune, purge, recreate):
    flags = []
    if prune or purge:
        flags.append("--prune")
    if purge:
        flags.append("--purge")
    for name in recreate or ():
        flags += ["--recreate", name]
    return flags
