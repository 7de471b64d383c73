#!/usr/bin/env bash
# Install what tests/test_slurm.py needs to start a real single-node Slurm: Debian's
# slurm-wlm (slurmctld, slurmd, client commands) and munge. Idempotent and quiet: does nothing
# when the programs are there. Needs root and apt-get. Starts no daemon (the test starts its
# own, with its own configuration, and stops them).
set -euo pipefail

programs=(munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel)
missing=()
for program in "${programs[@]}"; do
    command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || missing+=("$program")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-slurm: missing ${missing[*]}; installing them needs root" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-slurm: missing ${missing[*]}; no apt-get on this machine" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the packages' maintainer scripts from starting the system's munge and Slurm services
# (policy-rc.d is how Debian tells invoke-rc.d so); leave an existing policy alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

install() {
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}
# A fresh machine may have no package lists yet: update only when the install needs it.
if ! install 2>/dev/null; then
    apt-get update -qq >/dev/null
    install
fi
