-- Map-reduce: count the words of a text split into chunks across a Pool, then merge the
-- counts as each chunk's arrives (imap_unordered), then print them most frequent first.
--
-- The text is made here from a fixed seed, so that every run (and examples/wordcount.rhai,
-- and the Python twin in the comment at the end) prints the same counts.
--
-- usage: parrun examples/wordcount.lua [LINES]    (default 4000)

local n_lines = tonumber(arg[1]) or 4000
local words = { "alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "théta" }
local seed = 42
local lines = {}
for i = 1, n_lines do
  local line = {}
  for j = 1, 12 do
    seed = (seed * 1103515245 + 12345) % 2147483648
    line[j] = words[(seed >> 16) % 8 + 1]
  end
  lines[i] = table.concat(line, " ")
end

-- Eight chunks of whole lines: a task is a chunk, not a line, so that a task's work
-- outweighs sending it.
local chunks = {}
local per_chunk = math.ceil(n_lines / 8)
for first = 1, n_lines, per_chunk do
  chunks[#chunks + 1] = table.concat(lines, "\n", first, math.min(first + per_chunk - 1, n_lines))
end

-- The map step: runs in a worker, returns a table of counts (copied back to the script).
local function count(text)
  local counts = {}
  for word in text:gmatch("%S+") do
    counts[word] = (counts[word] or 0) + 1
  end
  return counts
end

-- The reduce step, in the script, as the workers' results come in (in any order).
local pool = parrun.Pool()
local total = {}
for counts in pool:imap_unordered(count, chunks) do
  for word, c in pairs(counts) do
    total[word] = (total[word] or 0) + c
  end
end
pool:close()
pool:join()

local order = {}
for word in pairs(total) do order[#order + 1] = word end
table.sort(order, function(a, b)
  return total[a] > total[b] or (total[a] == total[b] and a < b)
end)
for _, word in ipairs(order) do
  print(word .. "\t" .. total[word])
end

--[[ The same in Python (prints the same lines):
import multiprocessing as mp
from collections import Counter
words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "théta"]
seed, lines = 42, []
for i in range(4000):
    line = []
    for j in range(12):
        seed = (seed * 1103515245 + 12345) % 2147483648
        line.append(words[(seed >> 16) % 8])
    lines.append(" ".join(line))
chunks = ["\n".join(lines[i:i + 500]) for i in range(0, 4000, 500)]
def count(text): return Counter(text.split())
if __name__ == "__main__":
    total = Counter()
    with mp.Pool() as pool:
        for counts in pool.imap_unordered(count, chunks): total.update(counts)
    for w in sorted(total, key=lambda w: (-total[w], w.encode())): print(f"{w}\t{total[w]}")
]]
