#!/bin/sh
# Install (or upgrade, or remove) the mine edge agent as a systemd service.
#
#   sudo systemd/install.sh              install or upgrade: venv under /opt/mine-agent, unit, user, dirs,
#                                        example configuration (an existing one is never overwritten)
#   sudo systemd/install.sh --uninstall  remove program and unit; KEEP /var/lib/mine-agent (the buffer)
#                                        and /etc/mine-agent (configuration and signing key)
#
# Options and environment, mainly for packaging and tests:
#   DESTDIR=/scratch/root   install into a scratch root instead of /; no user, systemctl or chown calls
#   --no-venv | SKIP_VENV=1 do not create the virtualenv (files only)
#   PREFIX=/opt/mine-agent  where the program lives
#   PYTHON=python3          interpreter for the virtualenv: Python 3.11 or newer with venv and ensurepip
#                           (on Debian and Ubuntu: apt-get install python3-venv)
#   EXAMPLE_CONFIG=FILE     configuration installed as /etc/mine-agent/agent.toml when none exists
#                           (default: config/examples/gateway.toml of this source tree)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/mine-agent}
PYTHON=${PYTHON:-python3}
SKIP_VENV=${SKIP_VENV:-0}
EXAMPLE_CONFIG=${EXAMPLE_CONFIG:-$SRC/config/examples/gateway.toml}
UNIT_DIR=/etc/systemd/system
ACTION=install

for arg in "$@"; do
    case "$arg" in
        --no-venv) SKIP_VENV=1 ;;
        --uninstall) ACTION=uninstall ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { print; next } { exit }' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Act on the live system (users, systemctl) only when installing into / as root.
LIVE=0
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && [ -d /run/systemd/system ]; then LIVE=1; fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or set DESTDIR for a scratch install" >&2
    exit 1
fi

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# PREFIX goes into rm -rf, a sed replacement and the unit: an absolute path below /, no spaces or '#'.
case "$PREFIX" in
    /|//*|*/) die "PREFIX must be an absolute directory other than / without a trailing slash, not '$PREFIX'" ;;
    /*) ;;
    *) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
case "$PREFIX" in
    *[!A-Za-z0-9/._+-]*) die "PREFIX may hold only letters, digits and / . _ + -, not '$PREFIX'" ;;
esac

# The interpreter is checked before anything is written, so a missing package costs nothing to fix.
check_python() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        die "no Python interpreter '$PYTHON'. Install Python 3.11 or newer (Debian 12: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3"
    fi
    version=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || version=
    major=${version%%.*}
    minor=${version#*.}; minor=${minor%%.*}
    case "$major.$minor" in
        *[!0-9.]*|.|*.|.*) die "'$PYTHON' does not run as a Python interpreter (it printed '$version')" ;;
    esac
    if [ "$major" -lt 3 ] || { [ "$major" = 3 ] && [ "$minor" -lt 11 ]; }; then
        die "'$PYTHON' is Python $version; the agent needs Python 3.11 or newer (Debian 12 and Ubuntu 24.04 have it as python3). Install it, or set PYTHON=/path/to/python3.11 or newer"
    fi
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        die "'$PYTHON' (Python $version) cannot create virtualenvs: its venv or ensurepip module is missing. On Debian or Ubuntu: sudo apt-get install python3-venv (or python$major.$minor-venv for that interpreter), then run this again"
    fi
}

if [ "$ACTION" = uninstall ]; then
    if [ "$LIVE" = 1 ]; then
        systemctl disable --now mine-agent.service 2>/dev/null || true
    fi
    rm -f "$DESTDIR$UNIT_DIR/mine-agent.service" \
          "$DESTDIR/usr/lib/sysusers.d/mine-agent.conf" \
          "$DESTDIR/usr/lib/tmpfiles.d/mine-agent.conf" \
          "$DESTDIR/usr/local/bin/mine-agent"
    rm -rf "$DESTDIR$PREFIX"
    if [ "$LIVE" = 1 ]; then systemctl daemon-reload; fi
    say "mine-agent removed. Kept: /var/lib/mine-agent (buffer: batches not yet sent) and /etc/mine-agent"
    say "(configuration and signing key). Delete them yourself only if this gateway is retired."
    exit 0
fi

[ -f "$SRC/pyproject.toml" ] || die "$SRC is not the agent's source tree"
if [ "$SKIP_VENV" != 1 ]; then check_python; fi
upgrade=0
if [ -x "$DESTDIR$PREFIX/venv/bin/mine-agent" ]; then upgrade=1; fi

install -d -m 0755 "$DESTDIR$PREFIX" "$DESTDIR$PREFIX/share/doc" "$DESTDIR$UNIT_DIR" \
    "$DESTDIR/usr/lib/sysusers.d" "$DESTDIR/usr/lib/tmpfiles.d" "$DESTDIR/usr/local/bin"
install -d -m 0750 "$DESTDIR/etc/mine-agent" "$DESTDIR/etc/mine-agent/keys" "$DESTDIR/var/lib/mine-agent"

if [ "$SKIP_VENV" != 1 ]; then
    # Each install gets its own virtualenv, venv-<time>, and the symlink venv is switched to it in one
    # rename. A venv cannot be moved after creation (its scripts name their own path), and a running
    # agent keeps importing from its directory until restarted, so the old one stays until then.
    stamp=$(date +%Y%m%d%H%M%S)
    new="venv-$stamp"
    rm -rf "$DESTDIR$PREFIX/$new"
    if ! { "$PYTHON" -m venv "$DESTDIR$PREFIX/$new" &&
           "$DESTDIR$PREFIX/$new/bin/pip" install --quiet --no-cache-dir "$SRC"; }; then
        rm -rf "$DESTDIR$PREFIX/$new"
        echo "install.sh: building the virtualenv failed; the installed version is unchanged" >&2
        exit 1
    fi
    ln -sfn "$new" "$DESTDIR$PREFIX/venv.tmp"
    mv -T "$DESTDIR$PREFIX/venv.tmp" "$DESTDIR$PREFIX/venv"
    # A venv is not relocatable: with DESTDIR its scripts point into the scratch root.
fi

prune_venvs() {
    current=$(readlink "$DESTDIR$PREFIX/venv" 2>/dev/null || true)
    for dir in "$DESTDIR$PREFIX"/venv-*; do
        [ -d "$dir" ] || continue
        [ "$(basename "$dir")" = "$current" ] || rm -rf "$dir"
    done
}

sed "s#/opt/mine-agent#$PREFIX#g" "$SRC/systemd/mine-agent.service" > "$DESTDIR$UNIT_DIR/mine-agent.service.tmp"
chmod 0644 "$DESTDIR$UNIT_DIR/mine-agent.service.tmp"
mv "$DESTDIR$UNIT_DIR/mine-agent.service.tmp" "$DESTDIR$UNIT_DIR/mine-agent.service"
install -m 0644 "$SRC/systemd/mine-agent.sysusers" "$DESTDIR/usr/lib/sysusers.d/mine-agent.conf"
install -m 0644 "$SRC/systemd/mine-agent.tmpfiles" "$DESTDIR/usr/lib/tmpfiles.d/mine-agent.conf"
if [ -f "$SRC/docs/operations.md" ]; then install -m 0644 "$SRC/docs/operations.md" "$DESTDIR$PREFIX/share/doc/"; fi
ln -sfn "$PREFIX/venv/bin/mine-agent" "$DESTDIR/usr/local/bin/mine-agent"

config="$DESTDIR/etc/mine-agent/agent.toml"
if [ -e "$config" ]; then
    say "kept existing configuration $config"
elif [ -f "$EXAMPLE_CONFIG" ]; then
    install -m 0640 "$EXAMPLE_CONFIG" "$config"
    say "installed example configuration $config: edit it before starting"
else
    say "warning: no example configuration at $EXAMPLE_CONFIG; write /etc/mine-agent/agent.toml yourself" >&2
fi

if [ "$LIVE" = 1 ]; then
    systemd-sysusers /usr/lib/sysusers.d/mine-agent.conf
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/mine-agent.conf
    chgrp mine-agent /etc/mine-agent/agent.toml 2>/dev/null || true
    systemctl daemon-reload
    if [ "$upgrade" = 1 ]; then
        # Restart only if it was running: SIGTERM commits open windows, the backlog stays in the buffer.
        systemctl try-restart mine-agent.service
        prune_venvs
        say "upgraded; a running agent was restarted"
    else
        say "installed. The agent is not started yet. Next, as in $PREFIX/share/doc/operations.md:"
        say "  sudo mine-agent keys init /etc/mine-agent/keys"
        say "  sudo chown mine-agent: /etc/mine-agent/keys/gateway.key"
        say "  sudoedit /etc/mine-agent/agent.toml"
        say "  sudo mine-agent validate /etc/mine-agent/agent.toml"
        say "  sudo systemctl enable --now mine-agent"
        say "  mine-agent status"
    fi
else
    prune_venvs
    say "installed into ${DESTDIR:-/} (files only: no user, directories or service were activated)"
fi
