#!/usr/bin/env bash
# Installs what the tests need beyond Rust, pip and PostgreSQL: Debian's Chromium and
# ChromeDriver for the browser test of the UI (tests/ui_browser.rs). A no-op when present.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "FAIL: need root or sudo to install chromium and chromium-driver" >&2; exit 1; }
  SUDO=sudo
fi
command -v apt-get >/dev/null || {
  echo "FAIL: no apt-get; install Chromium and ChromeDriver as /usr/bin/chromium and /usr/bin/chromedriver" >&2
  exit 1
}
echo "installing chromium and chromium-driver (for the UI's browser test)"
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; } \
  || { echo "FAIL: could not install chromium and chromium-driver" >&2; exit 1; }
