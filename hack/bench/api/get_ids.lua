-- GET <prefix>{id} over the ids in the file given after "--", in a
-- per-thread shuffled order; the prefix is the second argument, default
-- /api/v1/tasks/. Requests are formatted once in init, so the
-- per-request Lua work is an index increment.
local reqs = {}
local i = 0
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

init = function(args)
  local path = args[1]
  local prefix = args[2] or "/api/v1/tasks/"
  for id in io.lines(path) do
    if id ~= "" then
      reqs[#reqs + 1] = wrk.format("GET", prefix .. id)
    end
  end
  -- thread_no is a global that setup() set in this thread's Lua state.
  math.randomseed(1000 + (thread_no or 0))
  for k = #reqs, 2, -1 do
    local j = math.random(k)
    reqs[k], reqs[j] = reqs[j], reqs[k]
  end
end

request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
