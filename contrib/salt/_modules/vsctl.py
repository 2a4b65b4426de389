"""
Salt execution module for vsctl, the declarative system-container manager.

It drives the ``vsctl`` binary and reads its versioned JSON output
(``format_version``, ``plan.guests[].action``, ``result.changed``,
``result.guests[].status``); it never edits vsctl's state directory and never
reimplements planning. Guest files are written atomically and only after
``vsctl plan`` has accepted them against a scratch copy of guests.d: an invalid
guest file would stop every later ``vsctl apply`` on the host, the boot-time
one included.

The TOML rendering and the staged plan mirror the Ansible collection's
``plugins/module_utils/vsctl.py`` (Salt cannot import it); keep the two in step.

Defaults for every function's ``binary``, ``root``, ``config`` and
``guests_dir`` come from the minion config or pillar keys ``vsctl:binary``,
``vsctl:root``, ``vsctl:config``, ``vsctl:guests_dir``.

.. code-block:: bash

    salt '*' vsctl.plan
    salt '*' vsctl.apply prune=True
    salt '*' vsctl.list
    salt '*' vsctl.status web1
"""

import difflib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile

from salt.exceptions import CommandExecutionError

__virtualname__ = "vsctl"
__func_alias__ = {"list_": "list"}

FORMAT_VERSION = 1
HEADER = "# Managed by Salt (vsctl state); local edits are overwritten.\n"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TOP_KEYS = ("template", "hostname", "state", "protect")
_TABLES = ("network", "limits", "disk", "rootfs", "init", "security", "env")
FIELDS = _TOP_KEYS + _TABLES + ("mounts",)


def __virtual__():
    # Always load: the binary may be given per call (`binary=`), and a clear
    # "cannot run vsctl" error beats a missing module.
    return __virtualname__


def _conf(key, value):
    if value is not None:
        return value
    return __salt__["config.get"]("vsctl:" + key, None)  # noqa: F821 (injected by Salt)


class _Vsctl:
    def __init__(self, binary=None, root=None, config=None, guests_dir=None):
        self.binary = _conf("binary", binary) or "vsctl"
        self.root = _conf("root", root)
        self.config = _conf("config", config)
        self.guests_dir = _conf("guests_dir", guests_dir) or os.path.join(self.root or "/", "etc/vsctl/guests.d")

    def argv(self, args, guests_dir=None):
        argv = [self.binary]
        if self.root:
            argv += ["--root", self.root]
        if self.config:
            argv += ["--config", self.config]
        argv += ["--guests-dir", guests_dir or self.guests_dir]
        return argv + list(args)

    def call(self, args, guests_dir=None, codes=(0,)):
        argv = self.argv(list(args) + ["--output", "json"], guests_dir)
        env = dict(os.environ, NO_COLOR="1")
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
        except OSError as exc:
            raise CommandExecutionError("cannot run {}: {}".format(self.binary, exc))
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        try:
            data = json.loads(out) if out.strip() else None
        except ValueError:
            data = None
        if proc.returncode not in codes:
            msg = "vsctl {} failed (exit {})".format(args[0], proc.returncode)
            detail = _format_errors(data, (guests_dir, self.guests_dir) if guests_dir else None)
            if detail:
                msg += ":\n" + detail
            elif err.strip():
                msg += ": " + err.strip()
            raise CommandExecutionError(msg, info=data)
        if data is None:
            raise CommandExecutionError("vsctl {} printed no JSON: {}".format(args[0], (err or out).strip()))
        if data.get("format_version") != FORMAT_VERSION:
            raise CommandExecutionError(
                "vsctl speaks JSON format_version {!r}; this module understands {}".format(
                    data.get("format_version"), FORMAT_VERSION
                )
            )
        return proc.returncode, data

    def plan(self, names=(), prune=False, purge=False, recreate=(), guests_dir=None):
        args = ["plan", "--detailed-exitcode"] + _flags(prune, purge, recreate) + list(names)
        rc, data = self.call(args, guests_dir=guests_dir, codes=(0, 2))
        return rc == 2, data

    def apply(self, names=(), prune=False, purge=False, recreate=()):
        args = ["apply", "--detailed-exitcode"] + _flags(prune, purge, recreate) + list(names)
        rc, data = self.call(args, codes=(0, 2))
        return rc == 2, data

    def staged_plan(self, name, text, prune=False, purge=False, recreate=()):
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
                with open(target, "w", encoding="utf-8") as handle:
                    handle.write(text)
            return self.plan([name], prune=prune, purge=purge, recreate=recreate, guests_dir=scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _flags(prune, purge, recreate):
    flags = []
    if prune or purge:
        flags.append("--prune")
    if purge:
        flags.append("--purge")
    for name in recreate or ():
        flags += ["--recreate", name]
    return flags


def _format_errors(data, replace=None):
    lines = []
    for err in (data or {}).get("errors") or []:
        where = str(err.get("file", ""))
        if replace:
            where = where.replace(replace[0], replace[1])
        if err.get("line"):
            where += ":{}:{}".format(err.get("line"), err.get("column"))
        line = "{}: {}".format(where, err.get("message"))
        if err.get("help"):
            line += " ({})".format(err.get("help"))
        lines.append(line)
    return "\n".join(lines)


def _names(names):
    if names is None:
        return []
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    for name in names:
        if not _NAME.match(name):
            raise CommandExecutionError("invalid guest name {!r}".format(name))
    return list(names)


# ---- TOML ------------------------------------------------------------------


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
            out.append("\\u{:04x}".format(code))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key):
    key = str(key)
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise CommandExecutionError("{!r} is not a finite number".format(value))
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]
        if not items:
            return "{}"
        return "{ " + ", ".join("{} = {}".format(_toml_key(k), _toml_value(v)) for k, v in items) + " }"
    raise CommandExecutionError("cannot write {!r} ({}) to a guest file".format(value, type(value).__name__))


def _prune(value):
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def render(**spec):
    """
    Render a guest file (TOML text) from keyword arguments shaped like
    vsctl.toml(5): template, hostname, state, protect, network, limits, disk,
    rootfs, init, security, env (dicts) and mounts (list of dicts). The same
    arguments always give the same bytes.

    .. code-block:: bash

        salt '*' vsctl.render template=busybox limits='{memory: 64MiB}'
    """
    spec = _prune({k: v for k, v in spec.items() if k in FIELDS})
    lines = [HEADER]
    for key in _TOP_KEYS:
        if key in spec:
            lines.append("{} = {}\n".format(key, _toml_value(spec[key])))
    for table in _TABLES:
        body = spec.get(table)
        if not body:
            continue
        if not isinstance(body, dict):
            raise CommandExecutionError("{} must be a mapping".format(table))
        lines.append("\n[{}]\n".format(table))
        for key, value in body.items():
            lines.append("{} = {}\n".format(_toml_key(key), _toml_value(value)))
    for mount in spec.get("mounts") or []:
        lines.append("\n[[mounts]]\n")
        for key, value in mount.items():
            lines.append("{} = {}\n".format(_toml_key(key), _toml_value(value)))
    return "".join(lines)


_STATE_LINE = re.compile(r"^(\s*state\s*=\s*)(\"[^\"]*\"|'[^']*')(.*)$")
_TABLE_LINE = re.compile(r"^\s*\[")


def _set_run_state(text, state):
    lines = text.splitlines(True)
    for i, line in enumerate(lines):
        if _TABLE_LINE.match(line):
            break
        match = _STATE_LINE.match(line.rstrip("\n"))
        if match:
            end = "\n" if line.endswith("\n") else ""
            lines[i] = '{}"{}"{}{}'.format(match.group(1), state, match.group(3), end)
            return "".join(lines)
    return 'state = "{}"\n'.format(state) + text


def _atomic_write(path, text):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    # Not ending in .toml: a concurrent `vsctl apply` must not read it as a guest.
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
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


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


# ---- public functions ------------------------------------------------------


def plan(names=None, prune=False, purge=False, recreate=None, binary=None, root=None, config=None, guests_dir=None):
    """
    Show what ``vsctl apply`` would do; changes nothing.

    Returns ``{"pending": bool, "plan": <vsctl plan JSON>}``.

    .. code-block:: bash

        salt '*' vsctl.plan
        salt '*' vsctl.plan names=web1,web2 prune=True
    """
    vsctl = _Vsctl(binary, root, config, guests_dir)
    pending, data = vsctl.plan(_names(names), prune=prune, purge=purge, recreate=_names(recreate))
    return {"pending": pending, "plan": data}


def apply(
    names=None, prune=False, purge=False, recreate=None, test=False, binary=None, root=None, config=None, guests_dir=None
):
    """
    Make the host match its guest files (``vsctl apply``). With ``test=True``
    only plans.

    Returns ``{"changed": bool, "plan": ..., "result": ...}`` (no ``result``
    in test mode, where ``changed`` means "would change").

    .. code-block:: bash

        salt '*' vsctl.apply
        salt '*' vsctl.apply prune=True purge=True
    """
    if test:
        planned = plan(names, prune, purge, recreate, binary, root, config, guests_dir)
        return {"changed": planned["pending"], "plan": planned["plan"]}
    vsctl = _Vsctl(binary, root, config, guests_dir)
    _, data = vsctl.apply(_names(names), prune=prune, purge=purge, recreate=_names(recreate))
    result = data.get("result") or {}
    return {"changed": bool(result.get("changed")), "plan": data.get("plan"), "result": result}


def list_(binary=None, root=None, config=None, guests_dir=None):
    """
    Desired and existing guests with their status (``vsctl list``).

    .. code-block:: bash

        salt '*' vsctl.list
    """
    _, data = _Vsctl(binary, root, config, guests_dir).call(["list"])
    return data.get("guests") or []


def status(name, binary=None, root=None, config=None, guests_dir=None):
    """
    One guest in detail (``vsctl status NAME``).

    .. code-block:: bash

        salt '*' vsctl.status web1
    """
    _names([name])
    _, data = _Vsctl(binary, root, config, guests_dir).call(["status", name])
    return data


def guest_text(name, run_state=None, content=None, source=None, saltenv="base", **fields):
    """
    The guest file a state asks for: ``content`` as given, the file at
    ``source`` (``salt://`` or a local path), or rendered from ``fields``; with
    ``run_state`` (running|stopped) its top-level ``state`` set accordingly.
    """
    if content is not None and source is not None:
        raise CommandExecutionError("give content or source, not both")
    given = [k for k, v in fields.items() if k in FIELDS and v is not None]
    if (content is not None or source is not None) and given:
        raise CommandExecutionError("content/source exclude the field arguments ({})".format(", ".join(given)))
    if content is None and source is not None:
        if source.startswith("salt://"):
            content = __salt__["cp.get_file_str"](source, saltenv=saltenv)  # noqa: F821
        else:
            content = _read(source)
        if content is None or content is False:
            raise CommandExecutionError("source {} not found".format(source))
    if content is None:
        if not fields.get("template"):
            raise CommandExecutionError("template is required unless content or source is given")
        spec = {k: v for k, v in fields.items() if k in FIELDS}
        if run_state:
            spec["state"] = run_state
        return render(**spec)
    if run_state:
        content = _set_run_state(content, run_state)
    if content and not content.endswith("\n"):
        content += "\n"
    return content


def converge(
    name,
    text=None,
    test=False,
    purge=False,
    recreate=False,
    binary=None,
    root=None,
    config=None,
    guests_dir=None,
):
    """
    Make guest ``name`` match ``text`` (its whole guest file; ``None``: the
    guest is removed with ``--prune``). Plans against a scratch copy of
    guests.d first; in ``test`` mode stops there.

    Returns ``{"path", "before", "after", "file_changed", "pending", "plan",
    "result", "changed"}``.
    """
    _names([name])
    vsctl = _Vsctl(binary, root, config, guests_dir)
    path = os.path.join(vsctl.guests_dir, name + ".toml")
    before = _read(path)
    file_changed = before != text
    absent = text is None
    again = [name] if recreate else []
    pending, planned = vsctl.staged_plan(name, text, prune=absent, purge=purge, recreate=again)
    out = {
        "path": path,
        "before": before,
        "after": text,
        "file_changed": file_changed,
        "pending": pending,
        "plan": planned,
        "result": None,
        "changed": file_changed or pending,
    }
    blocked = [g for g in planned.get("guests") or [] if g.get("blocked")]
    if blocked:
        raise CommandExecutionError("; ".join("{}: {}".format(g["name"], g["blocked"]) for g in blocked), info=out)
    if test:
        return out
    if file_changed:
        if absent:
            os.unlink(path)
        else:
            _atomic_write(path, text)
    _, data = vsctl.apply([name], prune=absent, purge=purge, recreate=again)
    result = data.get("result") or {}
    out.update(plan=data.get("plan"), result=result, changed=file_changed or bool(result.get("changed")))
    failed = [g for g in result.get("guests") or [] if g.get("status") == "failed"]
    if result.get("failed") or failed:
        raise CommandExecutionError(
            "; ".join("{}: {}".format(g.get("name"), g.get("error")) for g in failed) or "vsctl apply failed", info=out
        )
    return out


def diff(before, after, path):
    """Unified diff of two guest file texts (None: absent)."""
    return "".join(
        difflib.unified_diff(
            (before or "").splitlines(True),
            (after or "").splitlines(True),
            fromfile=path if before is not None else "/dev/null",
            tofile=path if after is not None else "/dev/null",
        )
    )
