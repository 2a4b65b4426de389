#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apply the whole guests.d of a host (`vsctl apply`).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vsctl_apply
short_description: Make a host's vsctl guests match its guest files
version_added: "0.1.0"
description:
  - Runs C(vsctl apply) over every guest file in C(guests.d) (or only O(names)), the way the
    boot-time C(vsctl.service) does.
  - Reports C(changed) only when vsctl changed something.
  - In check mode runs C(vsctl plan) instead, which reads the host and changes nothing.
  - In diff mode returns the plan as text.
  - Fails when a guest is blocked (a rebuild that needs O(recreate)) or a step failed.
author:
  - vsctl developers
requirements:
  - vsctl on the managed host.
attributes:
  check_mode:
    support: full
    description: Runs C(vsctl plan); nothing is touched.
  diff_mode:
    support: full
    description: The plan as text.
options:
  names:
    description: Only these guests. Default all.
    type: list
    elements: str
    default: []
  prune:
    description: Stop and unregister guests whose file was removed (their root filesystem is kept).
    type: bool
    default: false
  purge:
    description: With O(prune), also delete removed guests' root filesystems. Implies O(prune).
    type: bool
    default: false
  recreate:
    description: Guests whose root filesystem may be rebuilt (destroyed and cloned anew) for a rebuild-class change.
    type: list
    elements: str
    default: []
  root:
    description: Prefix for every vsctl path (C(vsctl --root)).
    type: path
  config:
    description: vsctl host settings file (C(vsctl --config)).
    type: path
  guests_dir:
    description: Directory of guest files. Default C(ROOT/etc/vsctl/guests.d).
    type: path
  binary:
    description: The vsctl executable, a path or a name looked up in C(PATH).
    type: path
    default: vsctl
seealso:
  - module: vsctl.vsctl.vsctl_guest
"""

EXAMPLES = r"""
- name: Install the guest files of this host
  ansible.builtin.copy:
    src: "guests/{{ inventory_hostname }}/"
    dest: /etc/vsctl/guests.d/
  register: files

- name: Converge, removing guests whose file is gone
  vsctl.vsctl.vsctl_apply:
    prune: true
"""

RETURN = r"""
plan:
  description: The plan as C(vsctl plan --output json) prints it.
  returned: always
  type: dict
  sample: {"format_version": 1, "guests": [{"name": "web1", "action": "noop"}], "templates_to_build": []}
result:
  description: C(result) of C(vsctl apply --output json).
  returned: when not in check mode
  type: dict
  sample: {"format_version": 1, "changed": false, "failed": false, "guests": [{"name": "web1", "status": "unchanged"}]}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vsctl.vsctl.plugins.module_utils.vsctl import (
    Vsctl,
    VsctlError,
    blocked_guests,
    plan_text,
    valid_name,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", default=[]),
            prune=dict(type="bool", default=False),
            purge=dict(type="bool", default=False),
            recreate=dict(type="list", elements="str", default=[]),
            root=dict(type="path"),
            config=dict(type="path"),
            guests_dir=dict(type="path"),
            binary=dict(type="path", default="vsctl"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for name in params["names"] + params["recreate"]:
        if not valid_name(name):
            module.fail_json(msg="invalid guest name %r" % name)
    binary = params["binary"]
    if os.sep not in binary:
        binary = module.get_bin_path(binary, required=True)

    def run(argv):
        return module.run_command(argv, environ_update={"NO_COLOR": "1"})

    vsctl = Vsctl(run, binary=binary, root=params["root"], config=params["config"], guests_dir=params["guests_dir"])
    flags = dict(prune=params["prune"], purge=params["purge"], recreate=params["recreate"])
    out = dict(changed=False)
    try:
        if module.check_mode:
            pending, plan = vsctl.plan(params["names"], **flags)
            out.update(changed=pending, plan=plan)
        else:
            _, data = vsctl.apply(params["names"], **flags)
            plan = data.get("plan")
            result = data.get("result") or {}
            out.update(changed=bool(result.get("changed")), plan=plan, result=result)
    except VsctlError as e:
        module.fail_json(msg=str(e), vsctl_output=e.data, **out)

    if module._diff:
        out["diff"] = dict(prepared=plan_text(plan))
    result = out.get("result") or {}
    failed = [g for g in result.get("guests") or [] if g.get("status") == "failed"]
    if result.get("failed") or failed:
        module.fail_json(msg="; ".join("%s: %s" % (g.get("name"), g.get("error")) for g in failed) or "vsctl apply failed", **out)
    blocked = blocked_guests(plan)
    if blocked:
        module.fail_json(msg="; ".join("%s: %s" % (g["name"], g["blocked"]) for g in blocked), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
