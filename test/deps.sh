#!/usr/bin/env bash
# Installs, on Debian 12, what building and testing ddict needs and is missing.
# Run as root (CI is root); a developer without root gets the apt-get line.
set -euo pipefail

pkgs=(
  make gcc libc6-dev pkg-config perl
  postgresql-15 postgresql-server-dev-15 libpq-dev   # server, PGXS, client library
  libipc-run-perl                                     # PostgreSQL::Test::Cluster (TAP)
  libhiredis-dev redis-server                         # Redis publishing and client version source
  valgrind                                            # client tests under memcheck
  libcmocka-dev                                       # client tests (C, TAP output)
  pgbouncer                                           # client tests through a transaction pooler
)
[[ "${DDICT_DEPS_EXTRA:-}" ]] && pkgs+=(${DDICT_DEPS_EXTRA})

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) != 0 ]]; then
  echo "ddict: missing packages: ${missing[*]}" >&2
  echo "ddict: run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "ddict: installing ${missing[*]}"
# No default cluster on port 5432 and no services started by the packages:
# the tests start exactly the servers they need and stop them by PID.
mkdir -p /etc/postgresql-common
grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
  echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
policy_added=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
trap '[[ $policy_added ]] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
