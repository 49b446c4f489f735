//! The `parrun` command: parses arguments and hands them to [`parrun::Runtime`], or to the
//! `bench` module for `parrun bench`.

mod bench;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use parrun::{Error, Language, Runtime};

/// Run Lua and Rhai scripts with threads, queues, locks, processes and pools.
///
/// `parrun bench` as the first argument is the benchmark command; a script named `bench` runs
/// as `parrun ./bench` or `parrun -- bench`.
#[derive(Parser)]
#[command(
    name = "parrun",
    version,
    // Only a first argument names the subcommand: after an option (`parrun -e CODE bench`,
    // `parrun --mode gil bench`) `bench` is the script or its argument, as before bench existed.
    args_conflicts_with_subcommands = true,
    // `parrun help` runs a script named `help`, as it always did.
    disable_help_subcommand = true,
    override_usage = "parrun [OPTIONS] [SCRIPT] [ARGS]...\n       parrun bench [OPTIONS] [SCRIPT]..."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The script's language, instead of the one its extension names.
    #[arg(long, value_name = "lua|rhai")]
    lang: Option<Language>,

    /// What Pool and Process run on: forked processes, isolated engines on threads, threads
    /// under the GIL, or the ranks of an MPI job (mpirun -np K parrun --mode mpi SCRIPT; a
    /// build with the feature mpi).
    #[arg(long, value_name = "gil|fork|isolated|mpi", default_value = "fork")]
    mode: parrun::Mode,

    /// Run CODE instead of a script file (Lua, as `lua -e` does, unless --lang rhai); every
    /// positional is an argument.
    #[arg(short = 'e', value_name = "CODE", value_parser = clap::value_parser!(OsString))]
    eval: Option<OsString>,

    /// Stop a pool task that runs longer than this many seconds (its worker is replaced).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    task_timeout: Option<f64>,

    /// No file, process or code-loading facilities for the script (see the README).
    #[arg(long)]
    sandbox: bool,

    /// Let Lua load binary (precompiled) chunks, as stock Lua does (not with --sandbox).
    #[arg(long)]
    binary_chunks: bool,

    /// Cap each engine's memory at BYTES (suffixes k, M, G).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, allow_negative_numbers = true)]
    max_memory: Option<usize>,

    /// Stop a script thread or pool task after about N instructions (Rhai: operations).
    #[arg(long, value_name = "N", value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    max_instructions: Option<u64>,

    /// Stop a script thread or pool task whose calls nest deeper than N.
    #[arg(long, value_name = "N", value_parser = parse_count::<usize>, allow_negative_numbers = true)]
    max_call_depth: Option<usize>,

    /// How Rhai runs scripts: its tree-walking interpreter (default, or what PARRUN_RHAI_VM
    /// names), or its `grain` bytecode VM (faster loops; see the README for what differs).
    #[arg(long, value_name = "ast|grain")]
    rhai_vm: Option<parrun::RhaiVm>,

    /// Workers of a Pool made without a count (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = parse_count::<usize>, allow_negative_numbers = true)]
    pool_size: Option<usize>,
    /// Show no progress bar (a long map shows one on stderr when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Write a timeline of the run to FILE: Chrome trace-event JSON, for Perfetto
    /// (ui.perfetto.dev) or chrome://tracing.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,

    /// How long a thread may hold the GIL while another waits, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    switch_interval: f64,

    /// The script to run (`-` reads it from standard input: Lua, unless --lang rhai), then the
    /// arguments it receives (Lua: `arg` and `...`; Rhai: `ARGS`).
    // One positional, so that everything after the script is the script's, even a first
    // argument that is one of parrun's flags (`./tool.lua -h`, `parrun x.rhai --mode a`).
    // Any bytes, as for `lua`: a path or an argument need not be UTF-8.
    #[arg(
        value_name = "SCRIPT [ARGS]",
        trailing_var_arg = true,
        num_args = 0..,
        value_parser = clap::value_parser!(OsString)
    )]
    positionals: Vec<OsString>,

    /// The script: the first positional.
    #[arg(skip)]
    script: Option<OsString>,

    /// The script's arguments: the positionals after it.
    #[arg(skip)]
    args: Vec<OsString>,
}

/// The binary's subcommands.
#[derive(Subcommand)]
enum Command {
    /// Time the article's experiments (or SCRIPTs) in each mode and language, beside CPython.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    one_c_malloc_arena();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as for every other usage error.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // `bench` is a subcommand only as the first argument.
            let help = match std::env::args_os().nth(1) {
                Some(first) if first == "bench" => "parrun bench --help",
                _ => "parrun --help",
            };
            eprintln!("parrun: {first} (see {help})");
            return ExitCode::from(2);
        }
    };
    let mut positionals = std::mem::take(&mut cli.positionals).into_iter();
    cli.script = positionals.next();
    cli.args = positionals.collect();
    if let Some(Command::Bench(options)) = cli.command {
        // No parrun signal handling here: Ctrl-C stops the bench and the runs it started (they
        // share its process group) the default way.
        return match bench::run(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("parrun bench: {err:#}");
                ExitCode::from(if err.is::<bench::Usage>() { 2 } else { 1 })
            }
        };
    }
    // Parsing starts no thread, so this is still before any other thread exists.
    if let Err(e) = parrun::signals::install() {
        eprintln!("parrun: cannot install signal handling: {e}");
        return ExitCode::from(2);
    }
    match run(cli) {
        // The low byte, as exit(2) keeps (and a forked Process's exitcode shows): -1 is 255,
        // as under lua and python3, where a clamp made it a success.
        Ok(status) => ExitCode::from(status as u8),
        Err(err) => {
            if !SCRIPT_ERROR_REPORTED.load(Ordering::Relaxed) {
                // Silent if the run is ending at once meanwhile (a signal, standard output gone).
                parrun::signals::report(&format!("parrun: {err}"));
            }
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

/// The script's error was printed when its code ended ([`Runtime::on_error`]), before the run
/// waited for its threads and processes: not again when the run returns it.
static SCRIPT_ERROR_REPORTED: AtomicBool = AtomicBool::new(false);

/// A whole number: one that is not (`-1`, `x`, `1.5`) is named as such, not by what the
/// parser of its type found ("invalid digit found in string"). 0 is left to the option's own
/// check, which names its least.
fn parse_count<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| match text.parse::<f64>() {
        Ok(n) if n < 0.0 => format!("`{text}` is negative: give a whole number of at least 1"),
        Ok(n) if n.fract() == 0.0 => format!("`{text}` is too large"),
        _ => format!("`{text}` is not a whole number"),
    })
}

/// `1000`, `64k`, `512M`, `2G` (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size in bytes (like 512M)"))?;
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size"))
}

fn run(cli: Cli) -> Result<i32, Error> {
    let interval = Duration::try_from_secs_f64(cli.switch_interval / 1000.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::Usage(match cli.switch_interval {
                ms if ms > 1.0 => "--switch-interval is too large".into(),
                ms if ms > 0.0 => "--switch-interval is too small: under a nanosecond".into(),
                _ => "--switch-interval must be a positive number of ms".into(),
            })
        })?;
    let mut runtime = Runtime::new()
        .switch_interval(interval)
        .sandbox(cli.sandbox)
        .binary_chunks(cli.binary_chunks)
        .progress(!cli.no_progress)
        .mode(cli.mode)
        .on_error(|err| {
            parrun::signals::report(&format!("parrun: {err}"));
            SCRIPT_ERROR_REPORTED.store(true, Ordering::Relaxed);
        });
    match cli.rhai_vm {
        Some(vm) => runtime = runtime.rhai_vm(vm),
        // The library takes an unknown name as the default; the command line says so, as
        // it does of an unknown `--rhai-vm`.
        None => match std::env::var(parrun::RhaiVm::ENV) {
            Ok(name) if !name.is_empty() => {
                name.parse::<parrun::RhaiVm>()
                    .map_err(|e| Error::Usage(format!("{}: {e}", parrun::RhaiVm::ENV)))?;
            }
            _ => {}
        },
    }
    if let Some(bytes) = cli.max_memory {
        runtime = runtime.max_memory(bytes);
    }
    // A limit of 0 would stop every script before its first step (Lua) or not at all (Rhai's
    // top level makes no call): refused, as --max-memory 0 and --pool-size 0 are.
    if let Some(count) = cli.max_instructions {
        if count == 0 {
            return Err(Error::Usage("--max-instructions must be at least 1".into()));
        }
        runtime = runtime.max_instructions(count);
    }
    if let Some(workers) = cli.pool_size {
        if workers == 0 {
            return Err(Error::Usage("--pool-size must be at least 1".into()));
        }
        if workers > parrun::MAX_WORKERS {
            return Err(Error::Usage(format!(
                "--pool-size must be at most {}",
                parrun::MAX_WORKERS
            )));
        }
        runtime = runtime.pool_size(workers);
    }
    if let Some(depth) = cli.max_call_depth {
        if depth == 0 {
            return Err(Error::Usage("--max-call-depth must be at least 1".into()));
        }
        runtime = runtime.max_call_depth(depth);
    }
    if let Some(secs) = cli.task_timeout {
        // (At most Python's TIMEOUT_MAX, as a script's `task_timeout`.)
        if secs > 9_223_372_036.0 {
            return Err(Error::Usage(
                "--task-timeout is too large: at most 9223372036 seconds".into(),
            ));
        }
        let timeout = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Error::Usage(match secs {
                    secs if secs > 0.0 => "--task-timeout is too small: under a nanosecond".into(),
                    _ => "--task-timeout must be a positive number of seconds".into(),
                })
            })?;
        runtime = runtime.task_timeout(timeout);
    }
    if let Some(lang) = cli.lang {
        runtime = runtime.language(lang);
    }
    if let Some(path) = cli.trace {
        runtime = runtime.trace(path);
    }
    // Code without a file name to tell its language from is Lua, as for the stock `lua`
    // command, so that a Lua script can run its interpreter again with `-e` or `-`.
    let unnamed_lang = cli.lang.unwrap_or(Language::Lua);
    if let Some(code) = &cli.eval {
        let lang = unnamed_lang;
        // With -e there is no script file: every positional is an argument.
        let args = cli.script.iter().chain(&cli.args).cloned();
        return runtime
            .args(args)
            .run_source(lang, "(command line)", code.as_bytes());
    }
    let Some(script) = &cli.script else {
        return Err(Error::Usage(
            "no script given: parrun SCRIPT [ARGS..] (see parrun --help)".into(),
        ));
    };
    // As the stock `lua` does: everything before the script, from argv[0] on, goes to
    // arg[-n] .. arg[-1]. The script's own arguments end the command line.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let before = argv.len().saturating_sub(cli.args.len() + 1);
    let runtime = runtime
        .interpreter_args(argv.into_iter().take(before))
        .args(cli.args.iter().cloned());
    if script == "-" {
        let lang = unnamed_lang;
        let mut code = Vec::new();
        std::io::stdin()
            .read_to_end(&mut code)
            .map_err(|source| Error::Read {
                path: "-".into(),
                source,
            })?;
        return runtime.run_source(lang, "stdin", &code);
    }
    runtime.run_file(script)
}

// Scripts allocate many small values (tables, strings, task results) from several threads at
// once; mimalloc's per-thread heaps keep them from contending on one allocator lock (glibc's
// malloc took apply_async 25-35% slower). Its v2 line (Cargo.toml), not v3: v3 hands a full
// page over to the other threads while it allocates, in steps other threads wait on, so a fork
// in the middle of one left the step half done in the child, whose next free of a block in that
// page waited for ever (a forked pool worker hung about once in 200 runs of a script whose
// threads start and end while it forks; tests/processes.rs churns so). v2 hands pages over
// only as a thread ends, which a fork waits out (`rt::spawn`'s allocator gate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps what still uses C's malloc (stdio, the loader, C modules) to glibc's one main arena,
/// before any thread starts. glibc gives each thread that calls it an arena of its own, up to 8
/// per core, and after every fork the parent unlocks each arena's mutex: each a write to a page
/// the child now shares, so a copy-on-write fault per arena per fork, on the thread that forks.
/// With one arena, 100 `Pool(4)` starts took 10-70 fewer page faults each and 1-9% less CPU
/// (`perf stat`, five paired runs; no change in their time resolved on a busy machine); the
/// arena's lock is rarely taken, mimalloc serving the rest.
fn one_c_malloc_arena() {
    // SAFETY: mallopt only sets a glibc tunable; called before any other thread exists.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
}
