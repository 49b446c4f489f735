#!/usr/bin/env bash
# Prepares the official Lua 5.4 test suite that tests/lua_testsuite.rs runs, in DEST
# (default: target/lua-tests):
#   DEST/testes/  the suite: the `testes/` directory of Lua 5.4.8, with the C libraries its
#                 attrib.lua loads built against the Lua headers parrun uses;
#   DEST/lua      the stock interpreter to compare with: `lua.c` of the same release, built on
#                 the very Lua sources parrun links (the lua-src crate, Lua 5.4.9), with the
#                 same defines, so that a difference is parrun's and not the Lua version's.
# Lua's repository reaches us inside the lupa sdist on PyPI (pinned, checked by sha256): the
# suite is not distributed through any registry of its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-$root/target/lua-tests}
if [ -x "$dest/lua" ] && [ -f "$dest/testes/libs/all" ]; then
  exit 0
fi

url=https://files.pythonhosted.org/packages/c3/a6/0f869fbb07c393f15473b1eefefb7b5bec162fb7481803d040ed4dc46002/lupa-2.8.tar.gz
sha256=d8022641b9ec8ecf2c5ecbe9f47e5a70e0b87c4b5ae921b92cb02a638e0acd08
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$url" "$tmp/lupa.tar.gz" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
echo "$sha256  $tmp/lupa.tar.gz" | sha256sum -c --quiet -
tar xzf "$tmp/lupa.tar.gz" -C "$tmp" \
  lupa-2.8/third-party/lua54/testes lupa-2.8/third-party/lua54/lua.c
upstream=$tmp/lupa-2.8/third-party/lua54

# The Lua sources parrun links: the lua-src crate's, as Cargo resolved it.
(cd "$root" && cargo fetch --quiet)
lua_src=$(cd "$root" && cargo metadata --format-version 1 | python3 -c '
import glob, json, os, sys
meta = json.load(sys.stdin)
crate = next(p for p in meta["packages"] if p["name"] == "lua-src")
print(sorted(glob.glob(os.path.join(os.path.dirname(crate["manifest_path"]), "lua-5.4.*")))[-1])
')

mkdir -p "$dest.new"
cp -r "$upstream/testes" "$dest.new/testes"
# lua-src builds Lua 5.4 with LUA_COMPAT_5_3 and LUA_USE_LINUX; the stock binary exports the
# C API (-Wl,-E) so that C modules load.
cc -std=gnu99 -O2 -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -Wl,-E -I"$lua_src" \
  -o "$dest.new/lua" "$lua_src"/*.c "$upstream/lua.c" -lm -ldl
make -s -C "$dest.new/testes/libs" LUA_DIR="$lua_src"
rm -rf "$dest"
mv "$dest.new" "$dest"
"$dest/lua" -v
