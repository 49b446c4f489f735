//! Build settings for Lua C modules.
//!
//! Lets C modules (`require "lfs"`, Debian's lua-* packages, LuaRocks builds) link against the
//! Lua inside the `parrun` binary: they expect the interpreter to export Lua's C API, as the
//! stock `lua` binary does. Only the API is exported (`lua_*`, `luaL_*`, `luaopen_*`), through a
//! dynamic list; exporting it also keeps the linker from dropping the API functions that
//! parrun itself never calls but a module may.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // Debian's multiarch directory for C modules (`/usr/lib/x86_64-linux-gnu/lua/5.4`).
    let arch = match var("CARGO_CFG_TARGET_ARCH").as_str() {
        "x86" => "i386".to_owned(),
        other => other.to_owned(),
    };
    let env = match var("CARGO_CFG_TARGET_ENV").as_str() {
        "" => "gnu".to_owned(),
        other => other.to_owned(),
    };
    println!("cargo:rustc-env=PARRUN_MULTIARCH={arch}-linux-{env}");
    if var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let list = out.join("lua-api.list");
    std::fs::write(&list, "{\n  lua_*;\n  luaL_*;\n  luaopen_*;\n};\n")
        .expect("cannot write the dynamic symbol list");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}",
        list.display()
    );
}
