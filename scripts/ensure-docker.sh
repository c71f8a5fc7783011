#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
# Idempotent: a no-op where `docker info` already works; otherwise installs
# Debian's docker.io and starts dockerd in the background, then waits for it.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

engine_answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if engine_answers; then
  log "Docker engine already answers; nothing to do"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ]; then
  die "DOCKER_HOST=${DOCKER_HOST} is set but no engine answers there; start it or unset DOCKER_HOST"
fi

[ "$(id -u)" -eq 0 ] || die "no Docker engine answers and installing one needs root (run as root, or start Docker yourself)"

if ! command -v dockerd >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "no Docker engine and no apt-get to install one; install Docker yourself"
  log "installing Debian's docker.io (one-time, about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null || die "apt-get install docker.io failed"
fi

log_file=/var/log/wsctl-dockerd.log
if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd in the background (log: ${log_file})"
  # containerd is started by dockerd itself when no system containerd runs.
  nohup dockerd >"${log_file}" 2>&1 </dev/null &
  disown || true
fi

for _ in $(seq 1 60); do
  if engine_answers; then
    log "Docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 1
done
tail -n 20 "${log_file}" >&2 || true
die "dockerd did not answer within 60 s; see ${log_file}"
