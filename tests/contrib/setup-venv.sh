#!/bin/sh
# Create the Python virtualenv the contrib integration tests drive
# (tests/contrib_ansible.rs, tests/contrib_salt.rs): real ansible-core and
# salt from PyPI, pinned, so a new upstream release never changes what CI
# tests without a commit here.
#
# Usage: tests/contrib/setup-venv.sh [VENV_DIR]   (default: target/contrib-venv)
# Environment: PYTHON (default python3; must be 3.11 or newer),
#              VSCTL_CONTRIB_LINT=1 also installs ansible-lint.
set -eu

ANSIBLE_CORE_VERSION=2.18.19
SALT_VERSION=3007.13
ANSIBLE_LINT_VERSION=25.1.3

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${1:-$repo/target/contrib-venv}
python=${PYTHON:-python3}

"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"python {sys.version.split()[0]} is too old: ansible-core 2.18 needs 3.11+")
PY

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# salt's own pins live in salt-requirements.txt (its PyPI sdist declares no
# dependencies); the check below keeps that file and SALT_VERSION in step.
grep -qx "salt==$SALT_VERSION" "$here/salt-requirements.txt" || {
    echo "salt-requirements.txt does not pin salt==$SALT_VERSION" >&2
    exit 1
}
"$venv/bin/python" -m pip install --quiet \
    "ansible-core==$ANSIBLE_CORE_VERSION" \
    -r "$here/salt-requirements.txt"
if [ "${VSCTL_CONTRIB_LINT:-0}" = 1 ]; then
    "$venv/bin/python" -m pip install --quiet "ansible-lint==$ANSIBLE_LINT_VERSION"
fi

# Prove the tools start, so a broken install fails here and not deep in a test.
"$venv/bin/ansible-playbook" --version | head -n 1
"$venv/bin/salt-call" --version
echo "contrib venv ready: $venv"
