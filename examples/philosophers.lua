-- Dining philosophers: five processes share five forks (Locks); each needs the two beside
-- him to eat. Taken naively (left, then right) they can all hold their left fork and wait for
-- ever. Two cures, each run here in turn:
--
-- 1. ordered: every philosopher takes the lower-numbered of his two forks first, so no cycle
--    of waits can form;
-- 2. polite: take the left fork, try the right one for a moment (acquire with a timeout), and
--    if it does not come, put the left one back and try again a little later.
--
-- The forks and the report queue are made before the processes start and passed in `args`:
-- they live in this process, and the children (forked, or threads in other modes) reach them.
-- The output is the same on every run and in every mode.
--
-- usage: parrun examples/philosophers.lua [MEALS]    (default 20)

local N = 5
local meals = tonumber(arg[1]) or 20

local forks = {}
for i = 1, N do forks[i] = parrun.Lock() end
local reports = parrun.Queue()

local function ordered(id, forks, reports, meals)
  local first, second = id, id % #forks + 1
  if first > second then first, second = second, first end
  for _ = 1, meals do
    forks[first]:acquire()
    forks[second]:acquire()
    parrun.sleep(0.001) -- eat
    forks[second]:release()
    forks[first]:release()
  end
  reports:put({ id, meals })
end

local function polite(id, forks, reports, meals)
  local left, right = forks[id], forks[id % #forks + 1]
  local eaten = 0
  while eaten < meals do
    left:acquire()
    if right:acquire(0.01) then
      parrun.sleep(0.001) -- eat
      eaten = eaten + 1
      right:release()
    end
    left:release()
    parrun.sleep(0.001 * id) -- think; a different while for each, so they fall out of step
  end
  reports:put({ id, eaten })
end

for _, way in ipairs({ { "ordered", ordered }, { "polite", polite } }) do
  local name, philosopher = way[1], way[2]
  local diners = {}
  for id = 1, N do
    diners[id] = parrun.Process(philosopher, { id, forks, reports, meals })
    diners[id]:start()
  end
  local ate = {}
  for _ = 1, N do
    local report = reports:get()
    ate[report[1]] = report[2]
  end
  for id = 1, N do diners[id]:join() end
  for id = 1, N do
    print(("%s: philosopher %d ate %d meals"):format(name, id, ate[id]))
  end
  local free = true
  for i = 1, N do free = free and not forks[i]:locked() end
  print(("%s: every fork is back on the table: %s"):format(name, free))
end

--[[ The same in Python (prints the same lines):
import multiprocessing as mp, sys, time
N, MEALS = 5, int(sys.argv[1]) if len(sys.argv) > 1 else 20
def ordered(id, forks, reports, meals):
    first, second = sorted((id, id % N + 1))
    for _ in range(meals):
        with forks[first - 1], forks[second - 1]:
            time.sleep(0.001)
    reports.put((id, meals))
def polite(id, forks, reports, meals):
    left, right, eaten = forks[id - 1], forks[id % N], 0
    while eaten < meals:
        left.acquire()
        if right.acquire(timeout=0.01):
            time.sleep(0.001); eaten += 1; right.release()
        left.release()
        time.sleep(0.001 * id)
    reports.put((id, eaten))
if __name__ == "__main__":
    forks, reports = [mp.Lock() for _ in range(N)], mp.Queue()
    for name, philosopher in (("ordered", ordered), ("polite", polite)):
        procs = [mp.Process(target=philosopher, args=(id, forks, reports, MEALS)) for id in range(1, N + 1)]
        for p in procs: p.start()
        ate = dict(reports.get() for _ in range(N))
        for p in procs: p.join()
        for id in range(1, N + 1): print(f"{name}: philosopher {id} ate {ate[id]} meals")
        free = all(f.acquire(False) and (f.release() or True) for f in forks)
        print(f"{name}: every fork is back on the table: {'true' if free else 'false'}")
]]
