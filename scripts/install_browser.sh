#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the browser tests (tests/test_web_page.py).
# Idempotent: does nothing (and exits 0) when /usr/bin/chromium and /usr/bin/chromedriver exist;
# otherwise runs `apt-get update` once and installs the packages `chromium` and `chromium-driver`.
# Uses sudo only when not root and sudo is available. Where it cannot even try (no apt-get, no root or
# sudo) it says so and exits 0: the browser tests then skip, as on a machine without Chromium.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: apt-get not found; install Chromium and chromedriver by hand" \
         "(until then the browser tests are skipped)" >&2
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser.sh: not root and sudo is not available; cannot install chromium" \
             "(the browser tests are skipped)" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser.sh: installing chromium and chromium-driver with apt-get" >&2
${SUDO[@]+"${SUDO[@]}"} apt-get update -qq
${SUDO[@]+"${SUDO[@]}"} apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "install_browser.sh: chromium or chromedriver still missing after apt-get install" >&2
    exit 1
fi
