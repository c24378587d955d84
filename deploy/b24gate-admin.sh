#!/bin/sh
# /usr/local/sbin/b24gate: the gateway's command for the administrator (root) on a server set
# up by docs/deploy.md. It runs as the service's user with the service's settings, so the
# shell and the replicas never disagree about the database, the key or the public URL.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "b24gate: run as root (sudo b24gate …): the settings file is root's" >&2
    exit 2
fi
set -a
. /etc/b24gate/b24gate.env
set +a
# runuser by its path: cron's PATH (/usr/bin:/bin) does not hold /usr/sbin.
exec /usr/sbin/runuser -u b24gate -- /opt/b24gate/venv/bin/b24gate "$@"
