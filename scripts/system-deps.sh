#!/usr/bin/env bash
# Installs the system tools archgraph uses, where this machine lets us (apt-get as root); otherwise says how.
set -u
need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
# PostgreSQL's server, for the test of a sweep shared through a database (tests/test_sweep_postgres.py)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ -z "${ARCHGRAPH_NO_BROWSER:-}" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null && exit 0
  echo "warning: apt-get could not install ${need[*]}" >&2
else
  echo "note: please install ${need[*]} (Debian/Ubuntu: sudo apt-get install ${need[*]}; macOS: brew install graphviz chromium chromedriver postgresql)" >&2
fi
exit 0
