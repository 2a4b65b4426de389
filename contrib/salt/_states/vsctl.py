"""
Salt states for vsctl guests.

Each state owns one guest file, ``guests.d/NAME.toml``, and converges the
guest with ``vsctl apply NAME`` through the ``vsctl`` execution module. The
file is planned against a scratch copy of guests.d before anything is written;
with ``test=True`` nothing else happens and the result is ``None`` when
something would change.

.. code-block:: yaml

    web1:
      vsctl.running:
        - template: busybox
        - hostname: web1.example.test
        - network:
            addresses: [10.88.0.11/24]
        - limits:
            memory: 256MiB
            cpus: 0.5

    db1:
      vsctl.guest_present:
        - source: salt://guests/db1.toml

    old1:
      vsctl.guest_absent:
        - purge: False

Connection arguments accepted by every state: ``binary``, ``root``,
``config``, ``guests_dir`` (defaults from the ``vsctl:*`` config/pillar keys).
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "vsctl"

_CONN = ("binary", "root", "config", "guests_dir")
# The guest-file fields a state accepts (vsctl.toml(5)); the run state comes
# from the state function itself.
_FIELDS = ("template", "hostname", "protect", "network", "limits", "disk", "rootfs", "init", "security", "env", "mounts")


def __virtual__():
    if "vsctl.converge" in __salt__:  # noqa: F821 (injected by Salt)
        return __virtualname__
    return (False, "the vsctl execution module is not loaded")


def _plan_changes(plan):
    """{guest: {action, changes}} for guests the plan would touch."""
    out = {}
    for guest in (plan or {}).get("guests") or []:
        if guest.get("action") == "noop" and not guest.get("changes"):
            continue
        entry = {"action": guest.get("action")}
        if guest.get("changes"):
            entry["changes"] = {
                c.get("field"): {"old": c.get("before"), "new": c.get("after"), "class": c.get("class")}
                for c in guest["changes"]
            }
        out[guest.get("name")] = entry
    return out


def _converge(name, text, purge=False, recreate=False, **conn):
    test = bool(__opts__.get("test"))  # noqa: F821
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        out = __salt__["vsctl.converge"](  # noqa: F821
            name, text, test=test, purge=purge, recreate=recreate, **{k: conn.get(k) for k in _CONN}
        )
    except CommandExecutionError as exc:
        ret["comment"] = str(exc)
        return ret
    changes = {}
    if out["file_changed"]:
        changes["diff"] = __salt__["vsctl.diff"](out["before"], out["after"], out["path"])  # noqa: F821
    planned = _plan_changes(out["plan"])
    if planned:
        changes["plan"] = planned
    if out.get("result"):
        statuses = {g.get("name"): g.get("status") for g in out["result"].get("guests") or []}
        if any(s != "unchanged" for s in statuses.values()):
            changes["applied"] = statuses
    if not out["changed"]:
        ret.update(result=True, comment="guest {} is in the desired state".format(name))
        return ret
    ret["changes"] = changes
    if test:
        ret.update(result=None, comment="guest {} would be changed".format(name))
    else:
        ret.update(result=True, comment="guest {} changed".format(name))
    return ret


def _present(name, run_state, content=None, source=None, recreate=False, saltenv="base", **kwargs):
    conn = {k: kwargs.pop(k) for k in _CONN if k in kwargs}
    fields = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        # A misspelt field must not silently fall back to vsctl's default.
        return {
            "name": name,
            "changes": {},
            "result": False,
            "comment": "unknown argument(s) {}; known: {}".format(", ".join(unknown), ", ".join(_FIELDS + _CONN)),
        }
    try:
        text = __salt__["vsctl.guest_text"](  # noqa: F821
            name, run_state=run_state, content=content, source=source, saltenv=saltenv, **fields
        )
    except CommandExecutionError as exc:
        return {"name": name, "changes": {}, "result": False, "comment": str(exc)}
    return _converge(name, text, recreate=recreate, **conn)


def guest_present(name, content=None, source=None, recreate=False, **kwargs):
    """
    The guest's file exists as described and the guest is applied; its run
    state is the file's own (vsctl's default: running).

    name
        The guest's name (file ``NAME.toml``).
    content / source
        The whole guest file as text, or a ``salt://`` or local path to it.
    template, hostname, protect, network, limits, disk, rootfs, init, security, env, mounts
        Fields of vsctl.toml(5) when neither content nor source is given.
    recreate
        Allow rebuilding the root filesystem (destroys it) for a rebuild-class change.
    """
    return _present(name, None, content=content, source=source, recreate=recreate, **kwargs)


def running(name, content=None, source=None, recreate=False, **kwargs):
    """Like ``guest_present`` with the guest file's ``state = "running"``."""
    return _present(name, "running", content=content, source=source, recreate=recreate, **kwargs)


def stopped(name, content=None, source=None, recreate=False, **kwargs):
    """Like ``guest_present`` with the guest file's ``state = "stopped"``."""
    return _present(name, "stopped", content=content, source=source, recreate=recreate, **kwargs)


def guest_absent(name, purge=False, **kwargs):
    """
    The guest's file is gone and the guest is stopped and unregistered
    (``vsctl apply NAME --prune``). Its root filesystem is kept unless
    ``purge`` is true.
    """
    conn = {k: kwargs.get(k) for k in _CONN}
    return _converge(name, None, purge=purge, **conn)
