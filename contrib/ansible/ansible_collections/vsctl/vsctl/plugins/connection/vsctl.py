# -*- coding: utf-8 -*-
# Run Ansible inside a vsctl guest through `vsctl exec`.
#
# Everything, file transfers included, goes through `vsctl exec NAME -- ...`,
# so it happens inside the guest's own namespaces as the guest sees its
# filesystem. This plugin must never resolve a guest path on the host (say,
# by writing into the guest's rootfs directory): a symlink planted by the
# guest would then point the host-side write anywhere on the host.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: vsctl
short_description: Run tasks inside vsctl guests with C(vsctl exec)
version_added: "0.1.0"
description:
  - Runs commands in a vsctl guest with C(vsctl exec NAME -- /bin/sh -c CMD), on the host the
    playbook's C(vsctl) runs on (the controller, or the host reached through
    C(ansible_connection) delegation).
  - Files are streamed through C(vsctl exec NAME -- sh -c 'cat > PATH') and C(cat PATH), so reads
    and writes happen inside the guest's mount namespace; no guest path is resolved on the host.
  - Modules that need Python need it inside the guest; M(ansible.builtin.raw) and
    M(ansible.builtin.script) do not.
author:
  - vsctl developers
options:
  remote_addr:
    description: The guest's name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_vsctl_guest
  vsctl_binary:
    description: The vsctl executable on the host.
    type: str
    default: vsctl
    vars:
      - name: ansible_vsctl_binary
    env:
      - name: ANSIBLE_VSCTL_BINARY
  vsctl_root:
    description: C(vsctl --root) for isolated trees.
    type: str
    vars:
      - name: ansible_vsctl_root
    env:
      - name: ANSIBLE_VSCTL_ROOT
  vsctl_config:
    description: C(vsctl --config).
    type: str
    vars:
      - name: ansible_vsctl_config
    env:
      - name: ANSIBLE_VSCTL_CONFIG
  executable:
    description: The shell inside the guest that runs commands.
    type: str
    default: /bin/sh
    vars:
      - name: ansible_executable
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()


class Connection(ConnectionBase):
    """Local subprocesses of `vsctl exec`; there is no session to keep."""

    transport = "vsctl.vsctl.vsctl"
    has_pipelining = True
    # vsctl exec already runs as the guest's root; become inside the guest
    # (sudo/su) still works through the usual become plugins.
    default_user = "root"

    def _connect(self):
        if not self._connected:
            display.vvv("ESTABLISH VSCTL CONNECTION TO %s" % self._guest(), host=self._guest())
            self._connected = True
        return self

    def _guest(self):
        return self.get_option("remote_addr") or self._play_context.remote_addr

    def _vsctl(self, argv):
        cmd = [self.get_option("vsctl_binary")]
        if self.get_option("vsctl_root"):
            cmd += ["--root", self.get_option("vsctl_root")]
        if self.get_option("vsctl_config"):
            cmd += ["--config", self.get_option("vsctl_config")]
        # -T: never a pty. Without one, vsctl relays the command's stdio
        # through pipes of its own, so no descriptor of the controller's
        # (the files put_file and fetch_file stream) enters the guest.
        return cmd + ["exec", "-T", self._guest(), "--"] + list(argv)

    def _spawn(self, argv, stdin, stdout):
        local = [to_bytes(a, errors="surrogate_or_strict") for a in self._vsctl(argv)]
        display.vvv("EXEC %s" % " ".join(shlex.quote(to_text(a)) for a in local), host=self._guest())
        try:
            return subprocess.Popen(local, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        except OSError as e:
            raise AnsibleConnectionFailure("cannot run %s: %s" % (to_native(local[0]), to_native(e)))

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        executable = self.get_option("executable") or "/bin/sh"
        proc = self._spawn(
            [executable, "-c", cmd],
            stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._guest())
        in_path = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(in_path):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        # The path travels as an argument ("$1"), never spliced into the script.
        # Written next to the target and renamed over it, like Ansible's own
        # atomic_move: readers never see half a file, and a symlink already at
        # the target is replaced rather than followed.
        script = 'tmp="$1.vsctl-put.$$" && cat > "$tmp" && mv -fT -- "$tmp" "$1" || { rm -f -- "$tmp"; exit 1; }'
        with open(in_path, "rb") as source:
            proc = self._spawn(["/bin/sh", "-c", script, "sh", out_path], stdin=source, stdout=subprocess.DEVNULL)
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise AnsibleError(
                "failed to write %s in guest %s (exit %d): %s" % (out_path, self._guest(), proc.returncode, to_native(stderr).strip())
            )

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._guest())
        out_path = to_bytes(out_path, errors="surrogate_or_strict")
        tmp = out_path + b".vsctl-fetch"
        try:
            with open(tmp, "wb") as dest:
                proc = self._spawn(["/bin/sh", "-c", 'cat -- "$1"', "sh", in_path], stdin=subprocess.DEVNULL, stdout=dest)
                _, stderr = proc.communicate()
            if proc.returncode != 0:
                raise AnsibleError(
                    "failed to read %s in guest %s (exit %d): %s" % (in_path, self._guest(), proc.returncode, to_native(stderr).strip())
                )
            os.rename(tmp, out_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close(self):
        self._connected = False
