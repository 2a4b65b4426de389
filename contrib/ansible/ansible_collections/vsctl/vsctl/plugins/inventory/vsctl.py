# -*- coding: utf-8 -*-
# Inventory of the vsctl guests of this host, from `vsctl list --output json`.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: vsctl
short_description: vsctl guests as inventory hosts
version_added: "0.1.0"
description:
  - Lists guests with C(vsctl list --output json) on the controller and adds one host per guest,
    reached with the P(vsctl.vsctl.vsctl#connection) connection.
  - Host variables C(vsctl_template), C(vsctl_hostname), C(vsctl_addresses), C(vsctl_status),
    C(vsctl_desired_state), C(vsctl_protect).
  - Groups C(vsctl) (every guest), C(vsctl_template_TEMPLATE) and C(vsctl_status_STATUS), plus
    whatever O(groups) and O(keyed_groups) build.
  - The inventory file's name must end in C(vsctl.yml) or C(vsctl.yaml).
author:
  - vsctl developers
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as this plugin's.
    type: str
    required: true
    choices: [vsctl.vsctl.vsctl]
  binary:
    description: The vsctl executable.
    type: str
    default: vsctl
  root:
    description: C(vsctl --root) for isolated trees.
    type: str
  config:
    description: C(vsctl --config).
    type: str
  guests_dir:
    description: C(vsctl --guests-dir).
    type: str
  statuses:
    description: Only guests whose status is one of these (for example V(running)). Default all.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
# guests.vsctl.yml
plugin: vsctl.vsctl.vsctl
statuses: [running]
keyed_groups:
  - key: vsctl_template
    prefix: tpl
"""

import json
import re
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

FORMAT_VERSION = 1


def _group_name(prefix, value):
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", str(value))


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "vsctl.vsctl.vsctl"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(("vsctl.yml", "vsctl.yaml"))

    def _list(self):
        argv = [self.get_option("binary")]
        for option, flag in (("root", "--root"), ("config", "--config"), ("guests_dir", "--guests-dir")):
            if self.get_option(option):
                argv += [flag, self.get_option(option)]
        argv += ["list", "--output", "json"]
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as e:
            raise AnsibleParserError("cannot run %s: %s" % (argv[0], to_native(e)))
        if proc.returncode != 0:
            raise AnsibleParserError("vsctl list failed (exit %d): %s" % (proc.returncode, to_native(proc.stderr).strip()))
        try:
            data = json.loads(proc.stdout)
        except ValueError as e:
            raise AnsibleParserError("vsctl list printed no JSON: %s" % to_native(e))
        if data.get("format_version") != FORMAT_VERSION:
            raise AnsibleParserError(
                "vsctl speaks JSON format_version %r; this plugin understands %d" % (data.get("format_version"), FORMAT_VERSION)
            )
        return data.get("guests") or []

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        statuses = set(self.get_option("statuses") or [])
        strict = self.get_option("strict")
        self.inventory.add_group("vsctl")
        for guest in self._list():
            if statuses and guest.get("status") not in statuses:
                continue
            name = guest["name"]
            self.inventory.add_host(name, group="vsctl")
            hostvars = {
                "vsctl_template": guest.get("template"),
                "vsctl_hostname": guest.get("hostname"),
                "vsctl_addresses": guest.get("addresses") or [],
                "vsctl_status": guest.get("status"),
                "vsctl_desired_state": guest.get("desired_state"),
                "vsctl_protect": guest.get("protect", False),
                "ansible_connection": "vsctl.vsctl.vsctl",
                "ansible_vsctl_binary": self.get_option("binary"),
            }
            if self.get_option("root"):
                hostvars["ansible_vsctl_root"] = self.get_option("root")
            if self.get_option("config"):
                hostvars["ansible_vsctl_config"] = self.get_option("config")
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            for prefix, value in (("vsctl_template_", guest.get("template")), ("vsctl_status_", guest.get("status"))):
                if value:
                    group = self.inventory.add_group(_group_name(prefix, value))
                    self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
