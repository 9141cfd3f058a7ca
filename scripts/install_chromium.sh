#!/usr/bin/env bash
# Installs Debian's chromium package with apt-get (as root, or with
# passwordless sudo), which the docs' rendering test
# (keras_ersm/docs_test.py::test_site_renders_in_chromium) drives headless.
# scripts/test.sh calls it; the README says so.
# Does nothing when /usr/bin/chromium exists. When it cannot install (no
# apt-get, no root, no network) it says so and exits 0: the rendering test
# then skips with a message naming this script.
set -uo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium.sh: apt-get not found; the docs rendering test will be skipped." >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "install_chromium.sh: not root and no passwordless sudo; the docs rendering test will be skipped." >&2
  exit 0
fi
echo "install_chromium.sh: installing Debian's chromium for the docs rendering test" >&2
if $sudo apt-get update -qq \
  && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
  # The binary itself: Debian's /usr/bin/chromium is a sh wrapper that can
  # print "[: ...: unexpected operator" from its environment checks.
  if [ -x /usr/lib/chromium/chromium ]; then
    /usr/lib/chromium/chromium --version >&2 2>/dev/null || true
  fi
else
  echo "install_chromium.sh: apt-get install chromium failed; the docs rendering test will be skipped." >&2
fi
exit 0
