#!/bin/sh
# k8s-master post-remove: reload systemd. Cluster data in
# /var/lib/k8s-master (or the configured data directory) is never deleted,
# not even on purge: remove it with `k8s-master reset` before removing the
# package, or by hand.
set -e
[ -d /run/systemd/system ] || exit 0
command -v systemctl >/dev/null 2>&1 || exit 0
systemctl daemon-reload || true
exit 0
