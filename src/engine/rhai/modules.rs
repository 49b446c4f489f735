//! The modules a Rhai script imports: where `import` finds them, and how another engine (an
//! isolated worker's) gets the same modules.
//!
//! [`ScriptModules`] resolves a relative path from the directory of the file that imports it:
//! the script's, or a module's (so `import "lib/m"` in the script and `import "n"` in
//! `lib/m.rhai` find `lib/m.rhai` and `lib/n.rhai`, as under `rhai-run` started in the script's
//! directory, wherever parrun is started). A module's source is its file's path, so its errors
//! name that file, and a module is known by that path everywhere.
//!
//! Every module an engine loads is kept by its path ([`Loaded`]). A forked worker inherits
//! them, and an isolated engine starts with the script's ([`copied`]), so a worker
//! finds a module the script imported without running its code again (its prints, its side
//! effects), as Lua's isolated workers find `package.loaded`; a module the script had not
//! loaded yet is loaded by the worker itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::rt::poison::Recover;
use ::rhai::{Engine, EvalAltResult, GlobalRuntimeState, Module, ModuleResolver, Position, Scope};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A loaded module, as Rhai shares it.
pub(super) type SharedModule = ::rhai::Shared<Module>;

/// The modules an engine has loaded, by source (the path of the module's file).
pub(super) type Loaded = Arc<Mutex<HashMap<String, SharedModule>>>;

fn lock(loaded: &Loaded) -> MutexGuard<'_, HashMap<String, SharedModule>> {
    loaded.lock().recover()
}

/// The module a script or module imports, by file, relative to the importer's directory.
pub(super) struct ScriptModules {
    loaded: Loaded,
}

impl ScriptModules {
    pub(super) fn new(loaded: Loaded) -> Self {
        ScriptModules { loaded }
    }

    /// Loads the module at `path` for the code whose source `global` names (`import` there),
    /// or returns it if it is already loaded. As Rhai's `FileModuleResolver`: the extension
    /// becomes `.rhai`, the module's code runs with the importer's state, a missing file is
    /// "Module not found" and any other failure an error in the module.
    fn load(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        scope: &mut Scope,
        path: &str,
        pos: Position,
    ) -> RhaiResult<SharedModule> {
        let importer_dir = global
            .source()
            .and_then(|s| Path::new(s).parent())
            .unwrap_or(Path::new(""));
        let mut file = importer_dir.join(path);
        file.set_extension("rhai");
        let source = file.to_string_lossy().into_owned();
        if let Some(module) = lock(&self.loaded).get(&source) {
            return Ok(module.clone());
        }
        let in_module = |err| Box::new(EvalAltResult::ErrorInModule(source.clone(), err, pos));
        // (`compile_file` makes the file's path the AST's source, hence the module's.)
        let ast = engine.compile_file(file).map_err(|err| match &*err {
            EvalAltResult::ErrorSystem(_, e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                Box::new(EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos))
            }
            _ => in_module(err),
        })?;
        let module: SharedModule = Module::eval_ast_as_new_raw(engine, scope, global, &ast)
            .map_err(in_module)?
            .into();
        // Two threads may load the same module at once (the GIL is handed over while a
        // module's code runs): the first one loaded is the one every importer gets.
        Ok(lock(&self.loaded).entry(source).or_insert(module).clone())
    }
}

impl ModuleResolver for ScriptModules {
    fn resolve_raw(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        scope: &mut Scope,
        path: &str,
        pos: Position,
    ) -> RhaiResult<SharedModule> {
        self.load(engine, global, scope, path, pos)
    }

    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> RhaiResult<SharedModule> {
        let mut global = engine.new_global_runtime_state();
        global.source = source.map(Into::into);
        self.load(engine, &mut global, &mut Scope::new(), path, pos)
    }
}

/// The module resolver of a sandboxed engine (`--sandbox`), which loads no file: an `import`
/// says why it fails (Rhai's own dummy resolver said the module was not found, beside the
/// file it names).
pub(super) struct NoModules;

impl ModuleResolver for NoModules {
    fn resolve(
        &self,
        _: &Engine,
        _: Option<&str>,
        path: &str,
        pos: Position,
    ) -> RhaiResult<SharedModule> {
        Err(EvalAltResult::ErrorRuntime(
            format!("cannot import `{path}`: --sandbox loads no modules").into(),
            pos,
        )
        .into())
    }
}

/// The module of `source` (a module's file) in the engine whose modules are `loaded`, loading
/// it there if that engine has not yet.
pub(super) fn find(engine: &Engine, loaded: &Loaded, source: &str) -> RhaiResult<SharedModule> {
    if let Some(module) = lock(loaded).get(source) {
        return Ok(module.clone());
    }
    engine
        .module_resolver()
        .resolve(engine, None, source, Position::NONE)
}

/// The modules in `loaded`, for another engine to start from. A loaded module never changes
/// (to its importers its variables are constants, read out as copies), so engines share it.
pub(super) fn copied(loaded: &Loaded) -> Loaded {
    Arc::new(Mutex::new(lock(loaded).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relative import starts in the importing file's directory, a module is loaded once
    /// and known by its file's path, and a missing one is named as the script wrote it.
    #[test]
    fn imports_start_in_the_importers_directory_and_load_once() {
        let dir = std::env::temp_dir().join(format!("parrun-modules-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(
            dir.join("lib/m.rhai"),
            "import \"n\" as n;\nfn f() { n::g() }\n",
        )
        .unwrap();
        std::fs::write(dir.join("lib/n.rhai"), "fn g() { 42 }\n").unwrap();
        let loaded = Loaded::default();
        let mut engine = Engine::new();
        engine.set_module_resolver(ScriptModules::new(loaded.clone()));
        let script = dir.join("main.rhai").to_string_lossy().into_owned();
        let run = |code: &str| {
            let mut ast = engine.compile(code).unwrap();
            ast.set_source(script.as_str());
            engine.eval_ast::<i64>(&ast)
        };

        assert_eq!(run("import \"lib/m\" as m; m::f()").unwrap(), 42);
        let m = dir.join("lib/m.rhai").to_string_lossy().into_owned();
        let n = dir.join("lib/n.rhai").to_string_lossy().into_owned();
        let first = lock(&loaded)
            .get(&m)
            .cloned()
            .expect("lib/m.rhai is loaded");
        assert_eq!(first.id(), Some(m.as_str()));
        assert!(lock(&loaded).contains_key(&n), "{:?}", lock(&loaded).keys());

        assert_eq!(run("import \"lib/m\" as m; m::f()").unwrap(), 42);
        assert!(Arc::ptr_eq(&first, &lock(&loaded)[&m]), "loaded again");
        assert!(Arc::ptr_eq(&first, &find(&engine, &loaded, &m).unwrap()));

        let err = run("import \"lib/none\" as x; 1").unwrap_err();
        assert!(
            matches!(&*err, EvalAltResult::ErrorModuleNotFound(p, _) if p == "lib/none"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
