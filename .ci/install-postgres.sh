#!/usr/bin/env bash
# Install a PostgreSQL server (and the q3c extension when the distribution has it) so that the
# tests can start a temporary server with pg_ctl.  Run as root on Debian/Ubuntu (CI); prints
# the path of pg_ctl on its last line.  Safe to run again: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-postgres.sh: run as root (or install sudo)" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive

find_pg_ctl() {
    local bindir
    if command -v pg_config >/dev/null 2>&1; then
        bindir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ]; then echo "$bindir/pg_ctl"; return 0; fi
    fi
    # newest major version first
    for p in $(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -t/ -k5,5nr); do
        if [ -x "$p" ]; then echo "$p"; return 0; fi
    done
    command -v pg_ctl 2>/dev/null || return 1
}

updated=0
apt_update() { if [ "$updated" -eq 0 ]; then $SUDO apt-get update -q; updated=1; fi; }

if ! PG_CTL="$(find_pg_ctl)"; then
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends postgresql
    PG_CTL="$(find_pg_ctl)" || { echo "install-postgres.sh: pg_ctl not found after install" >&2; exit 1; }
fi

# q3c for the major version of that server (e.g. postgresql-15-q3c); optional.
MAJOR="$(echo "$PG_CTL" | sed -n 's|^/usr/lib/postgresql/\([0-9]*\)/bin/pg_ctl$|\1|p')"
if [ -z "$MAJOR" ]; then
    MAJOR="$("$PG_CTL" --version | sed -n 's/.* \([0-9][0-9]*\)\.[0-9].*/\1/p')"
fi
if ls /usr/share/postgresql/"$MAJOR"/extension/q3c.control >/dev/null 2>&1; then
    echo "q3c: already installed for PostgreSQL $MAJOR" >&2
elif command -v apt-get >/dev/null 2>&1; then
    apt_update
    if $SUDO apt-get install -y -q --no-install-recommends "postgresql-$MAJOR-q3c"; then
        echo "q3c: installed postgresql-$MAJOR-q3c" >&2
    else
        echo "q3c: no package postgresql-$MAJOR-q3c; cone search uses HEALPix on PostgreSQL" >&2
    fi
fi

# PostgreSQL refuses to run as root: the test fixture runs pg_ctl as this user when needed.
getent passwd postgres >/dev/null || echo "warning: no 'postgres' user (tests run as root need it)" >&2

echo "$PG_CTL"
