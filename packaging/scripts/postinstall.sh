#!/bin/sh
# k8s-master post-install (deb: configure [old-version]; rpm: 1 = install,
# 2 = upgrade). Reload systemd; on an upgrade restart a running master so
# it runs the new binary. Config and data are left as they are.
set -e
[ -d /run/systemd/system ] || exit 0
command -v systemctl >/dev/null 2>&1 || exit 0
systemctl daemon-reload || true
case "$1" in
  configure) [ -n "$2" ] && upgrade=1 ;;
  2) upgrade=1 ;;
esac
if [ -n "${upgrade:-}" ]; then
  systemctl try-restart k8s-master.service || true
fi
exit 0
