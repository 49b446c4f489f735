//! What a forked worker costs in memory: the pages of what it only reads stay shared with the
//! parent (Linux's /proc/self/smaps_rollup tells a process's private pages).

mod common;

use common::{float_after, script, Run};

/// A forked Lua pool worker or process that reads every string of an inherited table, many times, while its
/// tasks make garbage (so its collector runs), keeps most of the parent's heap shared: Lua's
/// collector is generational from the first fork, so the worker's collections mark and sweep
/// only its young objects, and it lets them grow to 4 MB at most before a minor collection
/// (with Lua's own budget, a fifth of the heap, 20% of this 68 MB heap turned private; 6.7% now).
/// With the incremental collector a cycle wrote to every inherited object and the worker's
/// private memory was about twice the parent's heap.
#[test]
fn a_forked_lua_worker_that_reads_inherited_data_keeps_it_shared() {
    let lua = r#"
big = {}
for i = 1, 800000 do big[i] = "s" .. i end
local function private_dirty()
  local f = assert(io.open("/proc/self/smaps_rollup"))
  local text = f:read("a") f:close()
  return tonumber(text:match("Private_Dirty:%s+(%d+)")) * 1024
end
function probe()
  local total = 0
  for round = 1, 20 do
    for i = 1, #big do total = total + #big[i] end
    for i = 1, 20000 do local garbage = { i } end
  end
  return { private_dirty(), total }
end
local heap = collectgarbage("count") * 1024
local r
if arg[1] == "pool" then
  local pool = parrun.Pool(1)
  r = pool:apply(probe)
  pool:close() pool:join()
else
  local q = parrun.Queue()
  local p = parrun.Process(function(q) q:put(probe()) end, { q })
  p:start()
  r = q:get()
  p:join()
end
print("heap MB: " .. heap / 1e6)
print("read: " .. r[2])
print("private %: " .. 100 * r[1] / heap)
"#;
    for who in ["pool", "process"] {
        let (_dir, path) = script("cow", "lua", lua);
        let out = Run::new(["--mode", "fork", path.to_str().unwrap(), who]).output();
        out.assert_success();
        assert!(float_after(&out, "heap MB: ") > 40.0, "{}", out.describe());
        // 20 rounds over 800,000 strings of "s1".."s800000".
        let lengths: u64 = (1..=800_000u64)
            .map(|i| 1 + i.to_string().len() as u64)
            .sum();
        assert_eq!(
            float_after(&out, "read: "),
            (20 * lengths) as f64,
            "{}",
            out.describe()
        );
        // The young objects the worker makes between its minor collections are private (4 MB
        // at most, and the worker's own pages); the inherited heap is not.
        let private = float_after(&out, "private %: ");
        assert!(
            private < 15.0,
            "the {who} made {private:.0}% of the heap private\n{}",
            out.describe()
        );
    }
}

/// A forked worker's new pages are 4 KiB pages, not the 2 MiB transparent huge pages the
/// allocator asks for: one of them was most of an idle worker's private memory (2.4 MB), and a
/// worker that allocated 1.6 MB held 12 MB of huge pages. (Its huge-page count cannot tell:
/// a huge page the parent had at the fork is counted in the child too, shared; the kernel's
/// per-process switch, `THP_enabled` in /proc/self/status, tells whether it takes new ones.)
#[test]
fn a_forked_worker_takes_no_huge_pages_and_little_memory_idle() {
    let lua = r#"
local function rollup(field)
  local f = assert(io.open("/proc/self/smaps_rollup"))
  local text = f:read("a") f:close()
  return tonumber(text:match(field .. ":%s+(%d+)"))
end
local function thp()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a") f:close()
  return text:match("THP_enabled:%s+(%d+)") or "unknown"
end
print("parent THP_enabled: " .. thp())
local pool = parrun.Pool(1)
print("idle worker private kB: " .. pool:apply(rollup, { "Private_Dirty" }))
print("worker THP_enabled: " .. pool:apply(thp))
pool:close() pool:join()
"#;
    let (_dir, path) = script("idle", "lua", lua);
    let out = Run::new(["--mode", "fork", path.to_str().unwrap()]).output();
    out.assert_success();
    let private = float_after(&out, "idle worker private kB: ");
    assert!(private < 1536.0, "{private} kB\n{}", out.describe());
    if out.stdout_value("parent THP_enabled: ") == "1" {
        assert_eq!(
            out.stdout_value("worker THP_enabled: "),
            "0",
            "{}",
            out.describe()
        );
    }
}
