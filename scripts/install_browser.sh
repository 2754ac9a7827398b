#!/usr/bin/env bash
# Headless Chromium and its driver from Debian's packages, for the viewer's browser tests
# (tests/test_ui_browser.py). Browsers cannot be downloaded here, so Selenium is given the
# system's chromedriver and never fetches one. Called by `make install` and so by CI.
#
# Already installed: nothing to do. Otherwise apt-get installs them when this runs as root
# (CI does) or with passwordless sudo. When it cannot, it says so: outside CI the browser
# tests then skip with that reason; in CI (CI=true) this fails, as the tests would.
set -euo pipefail

packages=(chromium chromium-driver)

have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have_browser; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=none
elif [ "$(id -u)" -eq 0 ]; then
    sudo_cmd=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_cmd="sudo -n"
else
    sudo_cmd=none
fi

if [ "$sudo_cmd" = none ]; then
    echo "install_browser.sh: cannot install ${packages[*]} (needs apt-get as root);" \
        "the browser tests will skip. Install them with: sudo apt-get install -y ${packages[*]}" >&2
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "${packages[@]}"
have_browser
