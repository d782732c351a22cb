#!/usr/bin/env bash
# Makes sure the services the integration tests use are running on this machine: PostgreSQL on
# 127.0.0.1:5432 (trust auth for user postgres) and Redis on 127.0.0.1:6379. Starts a stopped one and
# installs a missing one with apt-get. Also installs Debian's Chromium for the dashboard's browser test
# (never a downloaded browser), and iproute2 and nftables for the partition tests. Exits non-zero when a
# service cannot be made available.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*"; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for <description> <command…>
  local what=$1
  shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up"
  return 1
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    log "PostgreSQL is running"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    log "no PostgreSQL cluster found under /etc/postgresql"
    return 1
  fi
  # Tests connect over TCP as postgres without a password.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    log "Redis is running"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "Redis" sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
}

ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then
    log "Chromium is installed"
    return
  fi
  log "installing Chromium (Debian's package) for the dashboard's browser test"
  apt_install chromium
}

ensure_network_tools() {
  # The partition tests cut a node off in a network namespace (ip netns, veth) with nftables.
  local missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  if [ ${#missing[@]} -eq 0 ]; then
    log "ip and nft are installed"
    return
  fi
  log "installing ${missing[*]} for the partition tests"
  apt_install "${missing[@]}"
}

ensure_postgres
ensure_redis
ensure_chromium
ensure_network_tools
