//! Progress bars: a long `map`, `starmap` or `imap_unordered` shows one on stderr once it has
//! run about a second, ending at its total and cleared; a quick map, a stderr that is not a
//! terminal, or `--no-progress` get nothing. The harness has no terminal, so most tests force
//! drawing with `PARRUN_PROGRESS=always`; one runs parrun under a pseudo-terminal (`script`)
//! to check the real terminal check and that printed lines stay whole beside the bar.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{parrun_bin, script, Output, Run, MODES};

/// A map, a starmap and an imap_unordered of 16 calls that sleep 0.15 s each on two workers:
/// about 1.2 s each, so each shows its bar; the results are checked too.
const SLOW_LUA: &str = r#"
local pool = parrun.Pool(2)
local xs, pairs_ = {}, {}
for i = 1, 16 do xs[i] = i; pairs_[i] = {i, 1} end
local function slow(x) parrun.sleep(0.15) return x end
local function slow2(x, y) parrun.sleep(0.15) return x + y end
local r = pool:map(slow, xs, 1)
print("map", #r, r[16])
r = pool:starmap(slow2, pairs_, 1)
print("starmap", #r, r[16])
local n = 0
for _ in pool:imap_unordered(slow, xs) do n = n + 1 end
print("imap_unordered", n)
"#;
const SLOW_RHAI: &str = r#"
let pool = Pool(2);
let xs = []; let pairs = [];
for i in 1..=16 { xs.push(i); pairs.push([i, 1]); }
let r = pool.map(|x| { sleep(0.15); x }, xs, 1);
print(`map	${r.len()}	${r[15]}`);
r = pool.starmap(|x, y| { sleep(0.15); x + y }, pairs, 1);
print(`starmap	${r.len()}	${r[15]}`);
let n = 0;
for x in pool.imap_unordered(|x| { sleep(0.15); x }, xs) { n += 1; }
print(`imap_unordered	${n}`);
"#;

const SLOW_STDOUT: [&str; 3] = ["map\t16\t16", "starmap\t16\t17", "imap_unordered\t16"];

/// Runs `code` (`ext`) in `mode` with `flags` and `env`.
fn run(mode: &str, ext: &str, code: &str, flags: &[&str], env: &[(&str, &str)]) -> Output {
    let (_dir, path) = script("progress", ext, code);
    let mut args = vec!["--mode", mode];
    args.extend_from_slice(flags);
    args.push(path.to_str().unwrap());
    let mut run = Run::new(args).timeout(Duration::from_secs(60));
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

/// The frames a bar drew: stderr cut at its carriage returns, with the escape sequences that
/// clear a line and the bar's own characters taken out.
fn frames(stderr: &str) -> Vec<String> {
    stderr
        .split(['\r', '\n'])
        .map(|f| f.replace("\x1b[2K", "").replace(['█', '░'], ""))
        .map(|f| f.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|f| !f.is_empty())
        .collect()
}

/// Every mode, both languages: each slow job draws frames counting toward 16 and a last
/// frame at 16/16, and the bar is cleared at the end; stdout is as without a bar.
fn slow_jobs_draw_bars_in(mode: &str) {
    for (ext, code) in [("lua", SLOW_LUA), ("rhai", SLOW_RHAI)] {
        let out = run(mode, ext, code, &[], &[("PARRUN_PROGRESS", "always")]);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            SLOW_STDOUT,
            "{mode} {ext}: {}",
            out.describe()
        );
        let frames = frames(&out.stderr);
        for label in ["map", "imap_unordered"] {
            let prefix = format!("parrun {label} [");
            let mine: Vec<_> = frames.iter().filter(|f| f.starts_with(&prefix)).collect();
            assert!(
                !mine.is_empty(),
                "{mode} {ext}: no {label} bar\n{}",
                out.describe()
            );
            assert!(
                mine.iter()
                    .all(|f| f.contains("/16 items, ") && f.contains("/s, ETA ")),
                "{mode} {ext}: {mine:#?}"
            );
            assert!(
                mine.last().unwrap().contains(" 16/16 items, "),
                "{mode} {ext}: {label} did not end at 16/16: {mine:#?}"
            );
        }
        // map and starmap: two bars named map, each ending at 16/16.
        let ends = frames
            .iter()
            .filter(|f| f.starts_with("parrun map [") && f.contains(" 16/16 items"))
            .count();
        assert!(ends >= 2, "{mode} {ext}: {frames:#?}");
        assert!(
            out.stderr.ends_with("\r\x1b[2K"),
            "{mode} {ext}: the bar was not cleared: {:?}",
            tail(&out.stderr, 80)
        );
    }
}

#[test]
fn slow_jobs_draw_bars_fork() {
    slow_jobs_draw_bars_in("fork");
}

#[test]
fn slow_jobs_draw_bars_gil() {
    slow_jobs_draw_bars_in("gil");
}

#[test]
fn slow_jobs_draw_bars_isolated() {
    slow_jobs_draw_bars_in("isolated");
}

/// A job that ends unfinished (its pool terminated, as at Ctrl-C or an error that ends the
/// script) leaves its bar at the count it reached, not the total, and clears it.
#[test]
fn a_terminated_job_clears_its_bar_at_its_count() {
    let lua = r#"
local pool = parrun.Pool(2)
local xs = {} for i = 1, 40 do xs[i] = i end
local r = pool:map_async(function(x) parrun.sleep(0.1) return x end, xs, 1)
parrun.sleep(1.6)
pool:terminate()
print(pcall(r.get, r))
"#;
    let rhai = r#"
let pool = Pool(2);
let xs = []; for i in 1..=40 { xs.push(i); }
let r = pool.map_async(|x| { sleep(0.1); x }, xs, 1);
sleep(1.6);
pool.terminate();
try { r.get(); print("no error"); } catch (e) { print(`false	${e}`); }
"#;
    for mode in MODES {
        for (ext, code) in [("lua", lua), ("rhai", rhai)] {
            let out = run(mode, ext, code, &[], &[("PARRUN_PROGRESS", "always")]);
            out.assert_success();
            assert!(
                out.stdout.contains("terminated"),
                "{mode} {ext}: {}",
                out.describe()
            );
            let frames = frames(&out.stderr);
            let last = frames
                .last()
                .unwrap_or_else(|| panic!("{mode} {ext}: no bar: {}", out.describe()));
            assert!(
                last.starts_with("parrun map [") && last.contains("/40 items"),
                "{mode} {ext}: {frames:#?}"
            );
            assert!(
                !frames.iter().any(|f| f.contains(" 40/40 items")),
                "{mode} {ext}: an unfinished job showed its total: {frames:#?}"
            );
            assert!(
                out.stderr.ends_with("\r\x1b[2K"),
                "{mode} {ext}: the bar was not cleared: {:?}",
                tail(&out.stderr, 80)
            );
        }
    }
}

/// Nothing on stderr: a quick map (done before a second), a slow map with stderr not a
/// terminal, a slow map with `--no-progress` (even with drawing forced).
#[test]
fn no_bar_for_quick_maps_pipes_or_no_progress() {
    let quick_lua = r#"
local pool = parrun.Pool(2)
local xs = {} for i = 1, 200 do xs[i] = i end
print(#pool:map(function(x) return x * 2 end, xs))
"#;
    let quick_rhai = r#"
let pool = Pool(2);
let xs = []; for i in 1..=200 { xs.push(i); }
print(pool.map(|x| x * 2, xs).len());
"#;
    for mode in MODES {
        for (ext, quick, slow) in [
            ("lua", quick_lua, SLOW_LUA),
            ("rhai", quick_rhai, SLOW_RHAI),
        ] {
            let out = run(mode, ext, quick, &[], &[("PARRUN_PROGRESS", "always")]);
            out.assert_success();
            assert_eq!(out.stdout_lines(), ["200"], "{}", out.describe());
            assert_eq!(out.stderr, "", "{mode} {ext}: a quick map drew a bar");
            if mode != "fork" {
                // The slow runs take 4 s each: one mode is enough for what the terminal
                // check and the flag decide, which is not about the mode.
                continue;
            }
            let piped = run(mode, ext, slow, &[], &[]);
            piped.assert_success();
            assert_eq!(piped.stdout_lines(), SLOW_STDOUT);
            assert_eq!(piped.stderr, "", "{ext}: a bar on a stderr that is a pipe");
            let off = run(
                mode,
                ext,
                slow,
                &["--no-progress"],
                &[("PARRUN_PROGRESS", "always")],
            );
            off.assert_success();
            assert_eq!(off.stdout_lines(), SLOW_STDOUT);
            assert_eq!(off.stderr, "", "{ext}: a bar with --no-progress");
        }
    }
}

/// Under a pseudo-terminal (util-linux `script`), stdout and stderr are one terminal: the bar
/// draws without being forced, and lines printed while it shows (by the script, and by pool
/// workers, which in `fork` are other processes) each start on a line of their own, after
/// the bar was cleared, never glued to a bar's frame.
#[test]
fn lines_printed_under_a_bar_stay_whole_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command (util-linux) to give parrun a terminal");
        return;
    }
    let lua = r#"
local pool = parrun.Pool(2)
local xs = {} for i = 1, 20 do xs[i] = i end
pool:map(function(x)
  parrun.sleep(0.1)
  if x > 10 then print("worker line " .. x) end
  return x
end, xs, 1)
print("main line after the map")
"#;
    for mode in ["fork", "gil"] {
        let (_dir, path) = script("pty", "lua", lua);
        let command = format!("{} --mode {mode} {}", parrun_bin(), path.display());
        let mut child = Command::new("script");
        child
            .args(["-qefc", &command, "/dev/null"])
            .env_remove("PARRUN_PROGRESS")
            .stdin(Stdio::null());
        let (status, text) = output_within(child, Duration::from_secs(60));
        assert!(status.success(), "{mode}: {text:?}");
        assert!(
            text.contains(" 20/20 items, "),
            "{mode}: no bar on a terminal: {text:?}"
        );
        for x in 11..=20 {
            let line = format!("worker line {x}\r\n");
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("{mode}: {line:?} missing or cut: {text:?}"));
            let before = &text[..at];
            assert!(
                before.is_empty() || before.ends_with('\n') || before.ends_with("\r\x1b[2K"),
                "{mode}: {line:?} glued to what was on the line: {:?}",
                tail(before, 120)
            );
        }
        assert!(
            text.contains("\r\x1b[2Kmain line after the map\r\n")
                || text.contains("\nmain line after the map\r\n"),
            "{mode}: {text:?}"
        );
    }
}

/// Runs `command` with its stdout read as it comes; kills it and panics after `timeout`.
fn output_within(mut command: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the command");
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {timeout:?}: {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap())
}

/// The last `n` characters of `text`.
fn tail(text: &str, n: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}
