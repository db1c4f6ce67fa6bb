#!/usr/bin/env bash
# Install a single-node SLURM (slurmctld, slurmd, client tools), munge, and the accounting
# daemon slurmdbd with a MariaDB server, so that tests/slurm_cluster.py can bring up a private
# cluster in a temporary folder.  Run as root on Debian/Ubuntu (CI).  Safe to run again:
# installs only what is missing.  The packages' own services are not started (the tests start
# every daemon themselves, with their own configuration files, and stop them afterwards).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-slurm.sh: run as root (or install sudo)" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive

# package -> a program it installs
declare -A PROGRAM=(
    [slurmctld]=/usr/sbin/slurmctld
    [slurmd]=/usr/sbin/slurmd
    [slurm-client]=/usr/bin/sbatch
    [slurmdbd]=/usr/sbin/slurmdbd
    [munge]=/usr/sbin/munged
    [mariadb-server]=/usr/sbin/mariadbd
)
missing=()
for pkg in "${!PROGRAM[@]}"; do
    [ -x "${PROGRAM[$pkg]}" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-slurm.sh: slurm, munge, slurmdbd and mariadb already installed" >&2
else
    # Keep the packages' services from starting during installation (invoke-rc.d and
    # deb-systemd-invoke both honour policy-rc.d); remove the policy afterwards unless it
    # was already there.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        own_policy=1
    fi
    trap 'if [ "$own_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi' EXIT
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for pkg in "${!PROGRAM[@]}"; do
    [ -x "${PROGRAM[$pkg]}" ] || { echo "install-slurm.sh: ${PROGRAM[$pkg]} missing after install" >&2; exit 1; }
done
/usr/sbin/slurmctld -V
