#!/usr/bin/python
# -*- coding: utf-8 -*-
# Manage one vsctl guest: its guest file, then `vsctl apply NAME`.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vsctl_guest
short_description: Manage one vsctl guest (system container)
version_added: "0.1.0"
description:
  - Writes the guest file C(guests.d/NAME.toml) from module options, from O(content), or from O(src),
    and runs C(vsctl apply NAME) so the host matches it.
  - The file is written atomically (temporary file and rename) and only after C(vsctl plan) has
    accepted it against a scratch copy of C(guests.d), so an invalid file never lands on the host.
  - O(state=absent) removes the guest file and runs C(vsctl apply NAME --prune), which stops and
    unregisters the guest. Its root filesystem is kept unless O(purge=true).
  - Changing a rebuild-class field (V(template), C(rootfs.strategy), C(security.userns)) destroys the
    guest's root filesystem; the module refuses unless O(recreate=true).
  - In check mode the module plans against a scratch copy of C(guests.d) and touches nothing.
  - In diff mode it returns the guest file before and after, and the plan.
author:
  - vsctl developers
requirements:
  - vsctl on the managed host (C(vsctl --version)).
attributes:
  check_mode:
    support: full
    description: Plans against a scratch copy of the guest files; no file or state is touched.
  diff_mode:
    support: full
    description: The guest file before and after, and the plan as text.
options:
  name:
    description:
      - The guest's name, which is also its file name (C(NAME.toml)).
      - Lower-case letters, digits and C(-), at most 63 characters, starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(present) writes the guest file without a run state, so vsctl's default (running) applies.
      - V(running) and V(stopped) also set the guest file's C(state).
      - V(absent) removes the guest file and unregisters the guest.
    type: str
    choices: [present, absent, running, stopped]
    default: present
  content:
    description:
      - The whole guest file as TOML text. Mutually exclusive with O(src) and the field options.
      - With O(state=running) or O(state=stopped) its top-level C(state) key is set accordingly.
    type: str
  src:
    description:
      - Path on the managed host of a TOML guest file to install. Mutually exclusive with O(content)
        and the field options. For a file on the controller use
        O(content) with C(lookup('file', ...)) or C(lookup('template', ...)).
    type: path
  template:
    description:
      - The template the root filesystem is cloned from. Required when the guest is described by
        field options.
    type: str
  hostname:
    description: The guest's hostname. vsctl's default is the guest's name.
    type: str
  protect:
    description: A protected guest is never removed or rebuilt.
    type: bool
  network:
    description: The C([network]) table.
    type: dict
    suboptions:
      mode:
        description: Network mode.
        type: str
        choices: [veth, ipvlan, host, none]
      addresses:
        description: Addresses as C(ADDRESS/PREFIX).
        type: list
        elements: str
      gateway:
        description: IPv4 default route.
        type: str
      gateway6:
        description: IPv6 default route.
        type: str
      dns:
        description: Name servers for the guest's C(/etc/resolv.conf).
        type: list
        elements: str
      parent:
        description: Host interface for C(ipvlan) mode.
        type: str
  limits:
    description:
      - The C([limits]) table. Sizes are integers (bytes) or strings with a unit (V(256MiB)).
    type: dict
    suboptions:
      memory:
        description: Memory limit (size).
        type: raw
      memory_swap:
        description: Swap on top of O(limits.memory) (size).
        type: raw
      cpus:
        description: CPU bandwidth in cores.
        type: float
      cpu_weight:
        description: Relative CPU weight, 1..10000.
        type: int
      pids:
        description: Maximum number of tasks.
        type: int
      io:
        description: Block I/O throttling, keys C(read_bps), C(write_bps) (sizes), C(read_iops), C(write_iops).
        type: dict
  disk:
    description: The C([disk]) table.
    type: dict
    suboptions:
      quota:
        description: Disk quota (size).
        type: raw
      inodes:
        description: Inode quota.
        type: int
  rootfs:
    description: The C([rootfs]) table.
    type: dict
    suboptions:
      strategy:
        description: How the root filesystem is cloned. Changing it rebuilds the guest.
        type: str
        choices: [auto, reflink, overlay, copy]
  init:
    description: The C([init]) table.
    type: dict
    suboptions:
      command:
        description: PID 1 and its arguments.
        type: list
        elements: str
      stop_signal:
        description: Signal that asks init to power off.
        type: str
      stop_timeout:
        description: How long to wait for init (duration, V(30s)).
        type: raw
  security:
    description: The C([security]) table.
    type: dict
    suboptions:
      userns:
        description: Run in an own user namespace. Changing it rebuilds the guest.
        type: bool
      cap_add:
        description: Capabilities added to the default set.
        type: list
        elements: str
      cap_drop:
        description: Capabilities dropped from the default set.
        type: list
        elements: str
      seccomp:
        description: Seccomp filter.
        type: str
        choices: [default, unconfined]
  mounts:
    description: Bind mounts from the host (C([[mounts]])).
    type: list
    elements: dict
    suboptions:
      source:
        description: Existing absolute host path.
        type: str
        required: true
      target:
        description: Absolute path inside the guest.
        type: str
        required: true
      read_only:
        description: Mount read-only (vsctl's default is V(true)).
        type: bool
  env:
    description: Environment variables for init.
    type: dict
  recreate:
    description:
      - Allow rebuilding the guest's root filesystem when a rebuild-class field changes.
        This destroys the guest's root filesystem.
    type: bool
    default: false
  purge:
    description: With O(state=absent), also delete the guest's root filesystem.
    type: bool
    default: false
  root:
    description: Prefix for every vsctl path (C(vsctl --root)); for isolated trees and tests.
    type: path
  config:
    description: vsctl host settings file (C(vsctl --config)).
    type: path
  guests_dir:
    description:
      - Directory of guest files. Default C(ROOT/etc/vsctl/guests.d).
      - Set it when C(vsctl.toml) moves C(paths.guests_dir).
    type: path
  binary:
    description: The vsctl executable, a path or a name looked up in C(PATH).
    type: path
    default: vsctl
notes:
  - The module reads vsctl's JSON output of C(format_version) 1 and fails on another version.
seealso:
  - module: vsctl.vsctl.vsctl_apply
"""

EXAMPLES = r"""
- name: A web guest on the busybox template
  vsctl.vsctl.vsctl_guest:
    name: web1
    state: running
    template: busybox
    hostname: web1.example.test
    network:
      addresses: [10.88.0.11/24]
      gateway: 10.88.0.1
    limits:
      memory: 256MiB
      cpus: 0.5
      pids: 256

- name: A guest from a TOML file templated on the controller
  vsctl.vsctl.vsctl_guest:
    name: db1
    content: "{{ lookup('ansible.builtin.template', 'db1.toml.j2') }}"

- name: Stop a guest
  vsctl.vsctl.vsctl_guest:
    name: web1
    state: stopped
    template: busybox

- name: Remove a guest and delete its root filesystem
  vsctl.vsctl.vsctl_guest:
    name: old1
    state: absent
    purge: true
"""

RETURN = r"""
guest_file:
  description: Path of the guest file.
  returned: always
  type: str
  sample: /etc/vsctl/guests.d/web1.toml
plan:
  description: The plan for this guest as C(vsctl plan --output json) prints it.
  returned: always
  type: dict
  sample: {"format_version": 1, "guests": [{"name": "web1", "action": "create", "changes": []}]}
result:
  description: C(result) of C(vsctl apply --output json) (not in check mode).
  returned: when the module applied
  type: dict
  sample: {"format_version": 1, "changed": true, "failed": false, "guests": [{"name": "web1", "action": "create", "status": "applied"}]}
file_changed:
  description: Whether the guest file was (or in check mode would be) written or removed.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vsctl.vsctl.plugins.module_utils.vsctl import (
    Vsctl,
    VsctlError,
    atomic_write,
    blocked_guests,
    plan_text,
    read_text,
    render_guest,
    set_run_state,
    valid_name,
)

FIELDS = ("template", "hostname", "protect", "network", "limits", "disk", "rootfs", "init", "security", "mounts", "env")


def argument_spec():
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent", "running", "stopped"]),
        content=dict(type="str"),
        src=dict(type="path"),
        template=dict(type="str"),
        hostname=dict(type="str"),
        protect=dict(type="bool"),
        network=dict(
            type="dict",
            options=dict(
                mode=dict(type="str", choices=["veth", "ipvlan", "host", "none"]),
                addresses=dict(type="list", elements="str"),
                gateway=dict(type="str"),
                gateway6=dict(type="str"),
                dns=dict(type="list", elements="str"),
                parent=dict(type="str"),
            ),
        ),
        limits=dict(
            type="dict",
            options=dict(
                memory=dict(type="raw"),
                memory_swap=dict(type="raw"),
                cpus=dict(type="float"),
                cpu_weight=dict(type="int"),
                pids=dict(type="int"),
                io=dict(type="dict"),
            ),
        ),
        disk=dict(type="dict", options=dict(quota=dict(type="raw"), inodes=dict(type="int"))),
        rootfs=dict(type="dict", options=dict(strategy=dict(type="str", choices=["auto", "reflink", "overlay", "copy"]))),
        init=dict(
            type="dict",
            options=dict(
                command=dict(type="list", elements="str"),
                stop_signal=dict(type="str"),
                stop_timeout=dict(type="raw"),
            ),
        ),
        security=dict(
            type="dict",
            options=dict(
                userns=dict(type="bool"),
                cap_add=dict(type="list", elements="str"),
                cap_drop=dict(type="list", elements="str"),
                seccomp=dict(type="str", choices=["default", "unconfined"]),
            ),
        ),
        mounts=dict(
            type="list",
            elements="dict",
            options=dict(
                source=dict(type="str", required=True),
                target=dict(type="str", required=True),
                read_only=dict(type="bool"),
            ),
        ),
        env=dict(type="dict"),
        recreate=dict(type="bool", default=False),
        purge=dict(type="bool", default=False),
        root=dict(type="path"),
        config=dict(type="path"),
        guests_dir=dict(type="path"),
        binary=dict(type="path", default="vsctl"),
    )


def desired_text(module):
    """The guest file this task asks for, or None for state=absent."""
    params = module.params
    state = params["state"]
    if state == "absent":
        return None
    if params["content"] is not None:
        text = params["content"]
    elif params["src"] is not None:
        text = read_text(params["src"])
        if text is None:
            module.fail_json(msg="src %s does not exist" % params["src"])
    else:
        if not params["template"]:
            module.fail_json(msg="template is required unless content or src is given")
        spec = dict((key, params[key]) for key in FIELDS)
        if state in ("running", "stopped"):
            spec["state"] = state
        try:
            return render_guest(spec, tool="Ansible (vsctl.vsctl.vsctl_guest)")
        except ValueError as e:
            module.fail_json(msg="guest %s: %s" % (params["name"], e))
    if state in ("running", "stopped"):
        text = set_run_state(text, state)
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["content", "src"]] + [[source, field] for source in ("content", "src") for field in FIELDS],
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    if not valid_name(name):
        module.fail_json(msg="invalid guest name %r: lower-case letters, digits and '-', at most 63 characters" % name)

    binary = params["binary"]
    if os.sep not in binary:
        binary = module.get_bin_path(binary, required=True)

    def run(argv):
        return module.run_command(argv, environ_update={"NO_COLOR": "1"})

    vsctl = Vsctl(run, binary=binary, root=params["root"], config=params["config"], guests_dir=params["guests_dir"])
    path = vsctl.guest_file(name)
    before = read_text(path)
    after = desired_text(module)
    file_changed = before != after
    absent = after is None
    recreate = [name] if params["recreate"] else []

    out = dict(changed=False, guest_file=path, file_changed=file_changed)
    try:
        # Plan first against a scratch copy: proves the new file valid and shows
        # what applying would do, before anything on the host is touched.
        pending, plan = vsctl.staged_plan(name, after, prune=absent, purge=params["purge"], recreate=recreate)
    except VsctlError as e:
        module.fail_json(msg=str(e), vsctl_output=e.data, **out)
    out["plan"] = plan

    if module._diff:
        out["diff"] = [
            dict(
                before_header=path if before is not None else "%s (absent)" % path,
                after_header=path if after is not None else "%s (absent)" % path,
                before=before or "",
                after=after or "",
            ),
            dict(prepared=plan_text(plan)),
        ]

    blocked = blocked_guests(plan)
    if blocked:
        module.fail_json(msg="; ".join("%s: %s" % (g["name"], g["blocked"]) for g in blocked), **out)

    if module.check_mode:
        out["changed"] = file_changed or pending
        module.exit_json(**out)

    if file_changed:
        try:
            if absent:
                os.unlink(path)
            else:
                if not os.path.isdir(vsctl.guests_dir):
                    os.makedirs(vsctl.guests_dir, 0o755)
                atomic_write(path, after)
        except (IOError, OSError) as e:
            module.fail_json(msg="cannot write %s: %s" % (path, e), **out)

    try:
        _, data = vsctl.apply([name], prune=absent, purge=params["purge"], recreate=recreate)
    except VsctlError as e:
        out["changed"] = file_changed
        module.fail_json(msg=str(e), vsctl_output=e.data, **out)
    out["plan"] = data.get("plan")
    result = data.get("result") or {}
    out["result"] = result
    out["changed"] = file_changed or bool(result.get("changed"))
    failed = [g for g in result.get("guests") or [] if g.get("status") == "failed"]
    if result.get("failed") or failed:
        module.fail_json(msg="; ".join("%s: %s" % (g.get("name"), g.get("error")) for g in failed) or "vsctl apply failed", **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
