#!/bin/sh
# k8s-master pre-remove (deb: remove | upgrade ...; rpm: 0 = removal,
# 1 = upgrade). On removal stop and disable the service; an upgrade leaves
# it running. Never touches the data directory.
set -e
case "$1" in
  remove|0) ;;
  *) exit 0 ;;
esac
[ -d /run/systemd/system ] || exit 0
command -v systemctl >/dev/null 2>&1 || exit 0
systemctl disable --now k8s-master.service >/dev/null 2>&1 || true
exit 0
