//! What `parrun bench` runs: the built-in workloads (the article's experiments, the pool's
//! overhead, and the pool's costs and big-state figures of issue 15's table, their sources
//! compiled into the binary so that the command works from anywhere)
//! and the scripts named on its command line, each as one command line per language and mode.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A built-in workload: its sources in each language and its default size (the first argument
/// each of its scripts takes).
struct Builtin {
    name: &'static str,
    lua: &'static str,
    rhai: &'static str,
    python: &'static str,
    size: u64,
}

const BUILTINS: [Builtin; 5] = [
    Builtin {
        name: "experiment_a",
        lua: include_str!("../../scripts/experiment_a.lua"),
        rhai: include_str!("../../scripts/experiment_a.rhai"),
        python: include_str!("../../bench/python/experiment_a.py"),
        size: 1_000_000,
    },
    Builtin {
        name: "experiment_b",
        lua: include_str!("../../scripts/experiment_b.lua"),
        rhai: include_str!("../../scripts/experiment_b.rhai"),
        python: include_str!("../../bench/python/experiment_b.py"),
        size: 10_000_000,
    },
    Builtin {
        name: "pool_overhead",
        lua: include_str!("../../scripts/pool_overhead.lua"),
        rhai: include_str!("../../scripts/pool_overhead.rhai"),
        python: include_str!("../../bench/python/pool_overhead.py"),
        size: 100_000,
    },
    Builtin {
        name: "pool_costs",
        lua: include_str!("../../scripts/pool_costs.lua"),
        rhai: include_str!("../../scripts/pool_costs.rhai"),
        python: include_str!("../../bench/python/pool_costs.py"),
        size: 100_000,
    },
    Builtin {
        name: "fork_state",
        lua: include_str!("../../scripts/fork_state.lua"),
        rhai: include_str!("../../scripts/fork_state.rhai"),
        python: include_str!("../../bench/python/fork_state.py"),
        size: 2_000_000,
    },
];

/// The names of the built-in workloads, in the order they run.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// A script language parrun runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lang {
    Lua,
    Rhai,
}

impl Lang {
    /// The name on the command line, in the table and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Lua => "lua",
            Lang::Rhai => "rhai",
        }
    }

    /// Parses `lua` or `rhai` (clap's value parser for `--langs`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "lua" => Ok(Lang::Lua),
            "rhai" => Ok(Lang::Rhai),
            _ => Err(format!("unknown language `{text}` (expected lua or rhai)")),
        }
    }
}

/// One workload: a name, and the script file for each language it has (and CPython's).
pub struct Workload {
    /// The name in the table and the JSON: a built-in's name or a script's file stem.
    pub name: String,
    /// The scripts for parrun, one per language.
    pub scripts: Vec<(Lang, PathBuf)>,
    /// The same program for CPython, if there is one.
    pub python: Option<PathBuf>,
    /// The arguments every one of its scripts gets.
    pub args: Vec<String>,
}

/// A directory removed when dropped, holding the built-in workloads' sources while they run.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A fresh directory of this process under the system's temporary directory.
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("parrun-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The workloads for `names` (all the built-ins when empty), with the languages in `langs`.
///
/// A name is a built-in workload's or a script's path. A path ending in `.lua` or `.rhai` is
/// that one script; a path without either is a stem, `stem.lua` and `stem.rhai` being the
/// scripts (those that exist, in `langs`). CPython's program is `stem.py` beside them. A
/// built-in's first argument is its default size times `scale`; `extra` follows.
pub fn resolve(
    names: &[String],
    langs: &[Lang],
    scale: f64,
    extra: &[String],
    scratch: &Scratch,
) -> Result<Vec<Workload>> {
    let names: Vec<String> = if names.is_empty() {
        builtin_names().map(String::from).collect()
    } else {
        names.to_vec()
    };
    let mut workloads = Vec::new();
    for name in &names {
        let workload = match BUILTINS.iter().find(|b| b.name == name) {
            Some(builtin) if !Path::new(name).exists() => {
                builtin_workload(builtin, langs, scale, extra, scratch)?
            }
            _ => script_workload(name, langs, extra)?,
        };
        workloads.push(workload);
    }
    Ok(workloads)
}

fn builtin_workload(
    builtin: &Builtin,
    langs: &[Lang],
    scale: f64,
    extra: &[String],
    scratch: &Scratch,
) -> Result<Workload> {
    let mut scripts = Vec::new();
    for &lang in langs {
        let text = match lang {
            Lang::Lua => builtin.lua,
            Lang::Rhai => builtin.rhai,
        };
        let file = format!("{}.{}", builtin.name, lang.name());
        scripts.push((lang, scratch.write(&file, text)?));
    }
    let python = scratch.write(&format!("{}.py", builtin.name), builtin.python)?;
    let size = ((builtin.size as f64 * scale).round() as u64).max(1);
    let mut args = vec![size.to_string()];
    args.extend(extra.iter().cloned());
    Ok(Workload {
        name: builtin.name.to_string(),
        scripts,
        python: Some(python),
        args,
    })
}

fn script_workload(name: &str, langs: &[Lang], extra: &[String]) -> Result<Workload> {
    let path = Path::new(name);
    let own_lang = match path.extension().and_then(|e| e.to_str()) {
        Some("lua") => Some(Lang::Lua),
        Some("rhai") => Some(Lang::Rhai),
        _ => None,
    };
    let stem = match own_lang {
        Some(_) => path.with_extension(""),
        None => path.to_path_buf(),
    };
    let scripts: Vec<(Lang, PathBuf)> = match own_lang {
        Some(lang) => {
            if path.is_dir() {
                bail!("{name} is a directory, not a script");
            }
            if !path.is_file() {
                bail!("no script {name}");
            }
            if !langs.contains(&lang) {
                let label = match lang {
                    Lang::Lua => "Lua",
                    Lang::Rhai => "Rhai",
                };
                bail!(
                    "{name} is a {label} script, and --langs {} leaves {label} out (give the \
                     stem, {}, to run its twins of those languages)",
                    langs.iter().map(|l| l.name()).collect::<Vec<_>>().join(","),
                    stem.display()
                );
            }
            vec![(lang, path.to_path_buf())]
        }
        None => langs
            .iter()
            .map(|&lang| (lang, stem.with_extension(lang.name())))
            .filter(|(_, p)| p.is_file())
            .collect(),
    };
    if scripts.is_empty() {
        let known: Vec<&str> = builtin_names().collect();
        bail!(
            "no script {name}.lua or {name}.rhai (for --langs {}), and no built-in workload of \
             that name ({})",
            langs.iter().map(|l| l.name()).collect::<Vec<_>>().join(","),
            known.join(", ")
        );
    }
    let python = stem.with_extension("py");
    let label = stem
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string());
    Ok(Workload {
        name: label,
        scripts,
        python: python.is_file().then_some(python),
        args: extra.to_vec(),
    })
}
