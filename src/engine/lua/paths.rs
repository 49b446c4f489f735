//! Where `require` looks: `package.path` and `package.cpath` start as the system's stock
//! `lua5.4` (Debian's build) has them, so modules installed by the system's packages
//! (`/usr/share/lua/5.4`, `/usr/lib/<multiarch>/lua/5.4`) and by LuaRocks (`/usr/local`) are
//! found, and `LUA_PATH_5_4`/`LUA_PATH` and `LUA_CPATH_5_4`/`LUA_CPATH` change them as they
//! change the stock interpreter's (a `;;` in them stands for the default).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use mlua::{Lua, Table};

/// Debian's default `package.path` for Lua 5.4.
const DEFAULT_PATH: &str = "/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;\
     /usr/local/lib/lua/5.4/?.lua;/usr/local/lib/lua/5.4/?/init.lua;\
     /usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua";

/// Debian's default `package.cpath` for Lua 5.4.
fn default_cpath() -> String {
    let multiarch = env!("PARRUN_MULTIARCH");
    format!(
        "/usr/local/lib/lua/5.4/?.so;/usr/lib/{multiarch}/lua/5.4/?.so;/usr/lib/lua/5.4/?.so;\
         /usr/local/lib/lua/5.4/loadall.so;./?.so"
    )
}

/// Sets `package.path` and `package.cpath` of a new state.
pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let path = search_path(env_var("LUA_PATH"), DEFAULT_PATH.as_bytes());
    let cpath = search_path(env_var("LUA_CPATH"), default_cpath().as_bytes());
    package.set("path", lua.create_string(path)?)?;
    package.set("cpath", lua.create_string(cpath)?)?;
    Ok(())
}

/// `NAME_5_4`, else `NAME`, as bytes.
fn env_var(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(format!("{name}_5_4"))
        .or_else(|| std::env::var_os(name))
        .map(OsString::into_vec)
}

/// The path the stock interpreter builds from an environment variable: the default without
/// one; else the variable, with its first `;;` replaced by `;default;` (`setpath` in Lua's
/// loadlib.c).
fn search_path(var: Option<Vec<u8>>, default: &[u8]) -> Vec<u8> {
    let Some(var) = var else {
        return default.to_vec();
    };
    let Some(mark) = var.windows(2).position(|w| w == b";;") else {
        return var;
    };
    let mut path = Vec::with_capacity(var.len() + default.len() + 2);
    if mark > 0 {
        path.extend_from_slice(&var[..mark]);
        path.push(b';');
    }
    path.extend_from_slice(default);
    if mark + 2 < var.len() {
        path.push(b';');
        path.extend_from_slice(&var[mark + 2..]);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::search_path;

    #[test]
    fn double_semicolon_stands_for_the_default_as_in_stock_lua() {
        let dft = b"D1;D2";
        let path = |var: Option<&str>| {
            String::from_utf8(search_path(var.map(|v| v.as_bytes().to_vec()), dft)).unwrap()
        };
        assert_eq!(path(None), "D1;D2");
        assert_eq!(path(Some("/a/?.lua")), "/a/?.lua");
        assert_eq!(path(Some("/a/?.lua;;")), "/a/?.lua;D1;D2");
        assert_eq!(path(Some(";;/b/?.lua")), "D1;D2;/b/?.lua");
        assert_eq!(path(Some(";;")), "D1;D2");
        assert_eq!(path(Some("/a;;/b;;/c")), "/a;D1;D2;/b;;/c");
    }
}
