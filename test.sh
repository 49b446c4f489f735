#!/usr/bin/env bash
# The README's test command: prepares what the tests need, then runs every test binary (one
# failing binary does not hide the others). Extra arguments go to `cargo test`.
#
# What the tests need beyond Rust and a C compiler:
# - Debian's Lua C modules lua-filesystem and lua-lpeg (the C-module tests load them), installed
#   with apt-get when this runs as root or with password-less sudo;
# - the official Lua 5.4 test suite and a stock interpreter to compare with, prepared in
#   target/lua-tests by tests/lua-testsuite/setup.sh (python3, cc and make).
# PARRUN_REQUIRE_SYSTEM_LUA makes a missing piece a test failure rather than a skipped test.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for pkg in lua-filesystem lua-lpeg; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=()
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  fi
  if [ "$(id -u)" = 0 ] || ((${#sudo[@]})); then
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "test.sh: cannot install ${missing[*]} (needs root): their tests will fail" >&2
  fi
fi

if ! tests/lua-testsuite/setup.sh target/lua-tests; then
  echo "test.sh: could not prepare the Lua test suite: its test will fail" >&2
fi

export PARRUN_LUA_TESTS="$PWD/target/lua-tests"
export PARRUN_REQUIRE_SYSTEM_LUA=1
exec cargo test --no-fail-fast "$@"
