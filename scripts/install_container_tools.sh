#!/usr/bin/env bash
# Installs and starts what the container tests (tests/docker/) need, from Debian's packages:
#   docker.io       the Docker engine (dockerd, containerd, runc) and a docker client with BuildKit built in;
#   docker-compose  Compose (1.29), for the compose test;
#   debootstrap     a Debian base image where the public one cannot be pulled.
# Then starts dockerd when no daemon answers (no init system is assumed: it is started in the
# background, detached from this shell, logging to /var/log/face-parser-dockerd.log).
# Idempotent: installs only what is missing and starts nothing when `docker info` answers.
# Never fails the caller: without apt-get, root or a working daemon it says why and exits 0;
# the container tests then skip with that reason.
set -uo pipefail

log() { echo "install_container_tools.sh: $*" >&2; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "not root and no sudo; the container tests will skip"
        exit 0
    fi
fi
as_root() { ${SUDO[@]+"${SUDO[@]}"} "$@"; }

missing=()
[[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)

if (( ${#missing[@]} )); then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install ${missing[*]} by hand (the container tests skip without an engine)"
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${missing[*]} with apt-get"
    # policy-rc.d: the packages must not try to start services through an init system.
    POLICY=/usr/sbin/policy-rc.d
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
        as_root chmod 755 "$POLICY"
        trap 'as_root rm -f "$POLICY"' EXIT
    fi
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        "${missing[@]}" >/dev/null || log "apt-get install ${missing[*]} failed"
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [[ ! -x /usr/sbin/dockerd ]]; then
    log "dockerd missing; the container tests will skip"
    exit 0
fi

DOCKERD_LOG=/var/log/face-parser-dockerd.log
log "starting dockerd (log: $DOCKERD_LOG)"
# setsid + closed stdin/stdout: the daemon outlives this script and holds none of the caller's pipes.
as_root sh -c "setsid /usr/sbin/dockerd </dev/null >>'$DOCKERD_LOG' 2>&1 &"
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within 60 s; the container tests will skip. Its log ends with:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 0
