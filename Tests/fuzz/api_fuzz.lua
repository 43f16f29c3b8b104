-- The API fuzzer's plugin: every hook calls functions and methods reachable from a hook with random
-- arguments of every kind, seeded by the request's `x-fuzz-seed` header, so a case is replayed by its
-- seed alone. A call may fail (that is a fault of the request, which is fine); what must never
-- happen is a crash, a sanitizer report, or Lua heap that grows across requests. Driven by
-- Sources/MoongateFuzzing (the `moongate-api-fuzz` executable and the Swift test suite).

local M = {}

-- Objects made once, when the plugin loads.
local objects = {}
local functions = {}     -- { name, fn } of every library and module function
local methods = {}       -- { name, key } of every method name on the objects
local verbs = { "route", "forward", "tunnel", "tunnel_via", "deny", "respond" }

local function collect(prefix, lib)
  local names = {}
  for name, value in pairs(lib) do
    if type(value) == "function" then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do functions[#functions + 1] = { prefix .. name, lib[name] } end
end

function M.init()
  collect("", _G)
  collect("string.", string)
  collect("table.", table)
  collect("math.", math)
  collect("utf8.", utf8)
  collect("moongate.", moongate)
  objects.hostset = moongate.hostset({ "example.org:443", "*.example.com", "[::1]:8443", "*" })
  objects.cidrset = moongate.cidrset({ "10.0.0.0/8", "::1/128", "203.0.113.7", "::ffff:192.0.2.0/120" })
  objects.router = moongate.router({ { host = "a.example", prefix = "/api/", cluster = "api" }, { cluster = "rest" } })
  if moongate.regex then objects.regex = moongate.regex("^(a+)(b)?c$") end
  for _, name in ipairs({ "header", "headers", "match", "contains", "find", "test", "set", "append", "remove" }) do
    methods[#methods + 1] = name
  end
end

local random = math.random

local STRINGS = {
  "", "a", "A", "%", "%%", "[", "[^", "]", "(", ")", "()", "%b()", "%f[%w]", "%1", ".-.-.-b", "^$",
  "example.org", "*.example.com", "10.0.0.1", "[::1]", "::1", "host:443", "/api/x", "x-fuzz-seed",
  "bad name", "\0", "a\0b", "\r\n", "\255\254", "日本", "%z", "%g+", "[%a-z]", "(a+)+b", "\\", "{}",
  "debug", "info", "notice", "warning", "error", "api", "origin",
}

local value  -- forward

local function random_string()
  local pick = random(1, 8)
  if pick <= 4 then return STRINGS[random(1, #STRINGS)] end
  if pick == 5 then return string.rep(STRINGS[random(1, #STRINGS)], random(1, 2000)) end
  if pick == 6 then  -- random bytes
    local n = random(0, 40)
    local t = {}
    for i = 1, n do t[i] = string.char(random(0, 255)) end
    return table.concat(t)
  end
  if pick == 7 then return string.rep("a", random(4000, 9000)) end
  return tostring(random(-1000, 1000))
end

local NUMBERS = {
  0, -0.0, 1, -1, 0.5, 1 / 0, -1 / 0, 0 / 0, math.maxinteger, math.mininteger, 1e308, -1e308, 2 ^ 53,
  2 ^ 63, 255, 256, 65535, 65536, 1 << 31, -(1 << 31), 3.0,
}

local function random_table(depth)
  local pick = random(1, 6)
  if pick == 1 then return {} end
  if pick == 2 then  -- an array
    local t = {}
    for i = 1, random(1, 8) do t[i] = value(depth + 1) end
    return t
  end
  if pick == 3 then  -- deeply nested
    local t = {}
    local inner = t
    for _ = 1, random(1, 200) do
      local next_level = {}
      inner[1] = next_level
      inner = next_level
    end
    return t
  end
  if pick == 4 then  -- a table that lies about its length or fails when touched
    return setmetatable({}, {
      __len = function() return NUMBERS[random(1, #NUMBERS)] end,
      __index = function(_, k) if random(1, 3) == 1 then error("index " .. tostring(k)) end return value(depth + 1) end,
      __lt = function() return random(1, 2) == 1 end,
      __tostring = function() return random_string() end,
    })
  end
  if pick == 5 then  -- a header-like map
    return { ["x-a"] = random_string(), ["content-length"] = "5", [random_string()] = value(depth + 1) }
  end
  return { random_string(), host = random_string(), prefix = random_string(), cluster = random_string() }
end

function value(depth)
  depth = depth or 0
  local kind = random(1, depth > 3 and 4 or 7)
  if kind == 1 then return nil end
  if kind == 2 then return random(1, 2) == 1 end
  if kind == 3 then return random(1, 2) == 1 and NUMBERS[random(1, #NUMBERS)] or random(-100, 100) end
  if kind == 4 then return random_string() end
  if kind == 5 then return random_table(depth) end
  if kind == 6 then
    return function(...) if random(1, 4) == 1 then error("callback") end return value(depth + 1) end
  end
  -- an object of the API (or the request, response and edit of this very hook)
  local pool = { objects.hostset, objects.cidrset, objects.router, objects.regex, M.req, M.res, M.edit, moongate, string }
  return pool[random(1, #pool)]
end

local function arguments()
  local n = random(0, 5)
  local args = {}
  for i = 1, n do args[i] = value() end
  return args, n
end

-- One random call: a library function, or a method looked up on a random object and called with a
-- random self (often the wrong kind of object).
local function one_call()
  local args, n = arguments()
  if random(1, 3) == 1 then
    local pool = { objects.hostset, objects.cidrset, objects.router, objects.regex, M.req, M.res, M.edit }
    local owner = pool[random(1, #pool)]
    if owner == nil then return end
    local method = owner[methods[random(1, #methods)]]
    if type(method) ~= "function" then return end
    local self = random(1, 2) == 1 and owner or value()
    return method(self, table.unpack(args, 1, n))
  end
  local entry = functions[random(1, #functions)]
  return entry[2](table.unpack(args, 1, n))
end

-- A hook body: seed from the header, make one to three calls, and sometimes return what the last
-- call returned (so hooks also return invalid values) or a random verb.
local function body(req, res, edit)
  M.req, M.res, M.edit = req, res, edit
  local seed = tonumber(req:header("x-fuzz-seed")) or 1
  math.randomseed(seed)
  local results
  for _ = 1, random(1, 3) do results = table.pack(one_call()) end
  M.req, M.res, M.edit = nil, nil, nil
  local ending = random(1, 4)
  if ending == 1 and results then return table.unpack(results, 1, results.n) end
  if ending == 2 then return moongate[verbs[random(1, #verbs)]](value(), value(), value()) end
  return nil
end

-- The hooks write M.req and friends, which are fields of a local table, not globals.
M.route = function(req) return body(req) end
M.connect = function(req) return body(req) end
M.sanitize_request = function(req, edit) body(req, nil, edit) end
M.sanitize_response = function(req, res, edit) body(req, res, edit) end
M.log = function(req, res) body(req, res) end

return M
