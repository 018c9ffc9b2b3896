#!/usr/bin/env bash
# A lab of separate hosts on one machine: N master namespaces and a client
# namespace, each with an eth0 on one bridge (held by a switch namespace),
# addresses in 10.99.0.0/24, no route out: test traffic never leaves the
# namespaces this script made (test/lab_test.go drives it).
#
#   scripts/netns-lab.sh up N      masters PREFIXm1..PREFIXmN (10.99.0.11..),
#                                  client PREFIXc (10.99.0.100), switch PREFIXsw
#   scripts/netns-lab.sh down      remove everything with the prefix
#   scripts/netns-lab.sh cut I     move master I's port to an isolated bridge
#   scripts/netns-lab.sh heal I    move it back
#   scripts/netns-lab.sh run I CMD...  run CMD in master I's namespace with
#                                  its own hostname (m<I>); I=c: the client
#
# PREFIX comes from $LAB_PREFIX (default "km-"); tests use their own.
set -euo pipefail
P=${LAB_PREFIX:-km-}
SW=${P}sw
NET=10.99.0

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  local n=$1
  [ "$n" -ge 1 ] && [ "$n" -le 9 ] || { echo "N must be 1-9" >&2; exit 2; }
  ns_exists "$SW" && { echo "lab ${P} already up; run: $0 down" >&2; exit 1; }
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link add br1 type bridge # the far side of a partition
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set br1 up
  local i
  for i in $(seq 1 "$n"); do host "m$i" "$NET.$((10 + i))"; done
  host c "$NET.100"
}

# host NAME ADDR: a namespace with eth0 on br0.
host() {
  local ns=${P}$1 port=${P}v$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$port" type veth peer name eth0 netns "$ns"
  ip link set "$port" netns "$SW"
  ip -n "$SW" link set "$port" master br0 up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
}

down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^${P}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

case ${1:-} in
  up) up "${2:?N}" ;;
  down) down ;;
  cut) ip -n "$SW" link set "${P}vm${2:?I}" master br1 ;;
  heal) ip -n "$SW" link set "${P}vm${2:?I}" master br0 ;;
  run)
    i=${2:?I}; shift 2
    host=m$i
    [ "$i" = c ] && host=c
    exec ip netns exec "${P}$host" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$host" "$@"
    ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
