-- connect_allowlist: which CONNECT targets may be tunnelled.
--
-- config:
--   allow            required: the target patterns allowed: "example.org", "*.example.com", "*" (any
--                    public host), optionally with a port: "example.org:8443", "*.example.com:*".
--                    There is no default: write allow = ["*"] to allow any public host.
--   ports            ports allowed for patterns written without one. Default: { 443 }.
--   allow_addresses  special addresses (loopback, private, link-local, CGNAT, metadata, ...) that may
--                    be tunnelled, each with its port: an exact address ("127.0.0.1:8443",
--                    "[::1]:8443") or a CIDR block ("127.0.0.0/8:443", "[::1]/128:8443"). No wildcards:
--                    a bare "*", a host pattern, a name or a missing port is refused. Special addresses
--                    not listed here are refused.
--   via              a cluster name: send allowed CONNECTs to that upstream proxy (tunnel_via)
--                    instead of terminating them here. It must be a configured cluster.
--
-- A target that is not allowed gets no opinion from this plugin, and the proxy's default (403,
-- CONNECT is off unless a plugin enables it) applies. A special address is denied outright.
-- The proxy also checks the addresses a name resolves to (a name that resolves to a private
-- address is refused unless that address is listed), so an allowlist of names cannot become SSRF.

local tunnel, tunnel_via, deny, ip_class = moongate.tunnel, moongate.tunnel_via, moongate.deny, moongate.ip_class

local M = {}

local with_port, without_port, special, ports, via
local REFUSED = {}
for _, class in ipairs({ "loopback", "private", "linklocal", "cgnat", "metadata", "unspecified",
                         "multicast", "broadcast", "reserved" }) do
  REFUSED[class] = "CONNECT to a " .. class .. " address is not allowed"
end

-- One allow_addresses entry: "addr:port", "addr/len:port", "[v6]:port" or "[v6]/len:port", returned
-- as the block for moongate.cidrset ("addr" or "addr/len") and the port.
local function address_entry(entry, i)
  local what = "connect_allowlist: allow_addresses[" .. i .. "]"
  if type(entry) ~= "string" then error(what .. " must be a string") end
  if entry:find("*", 1, true) then
    error(what .. " '" .. entry .. "': wildcards are not allowed here; list each address or CIDR block with its port")
  end
  local addr, rest = entry:match("^%[([^%]]*)%](.*)$")
  if addr == nil then addr, rest = entry:match("^([^:/]*)(.*)$") end
  local len, port = rest:match("^/(%d+):(%d+)$")
  if port == nil then port = rest:match("^:(%d+)$") end
  if ip_class(addr) == nil then
    error(what .. " '" .. entry .. "' is not an IP address or CIDR block with a port (\"10.0.0.0/8:443\", \"[::1]:8443\")")
  end
  if port == nil then
    error(what .. " '" .. entry .. "' needs a port (\"127.0.0.1:8443\", \"127.0.0.0/8:443\")")
  end
  port = tonumber(port)
  if port < 1 or port > 65535 then error(what .. " '" .. entry .. "': the port must be from 1 to 65535") end
  return len and (addr .. "/" .. len) or addr, port
end

-- A cluster name must be one of the configured clusters (when they are known).
local function check_cluster(name, what)
  local known = moongate.clusters()
  if #known == 0 then return end
  for _, cluster in ipairs(known) do
    if cluster == name then return end
  end
  error(what .. ": unknown cluster '" .. name .. "' (clusters: " .. table.concat(known, ", ") .. ")", 2)
end

function M.init(config)
  if config.allow == nil then
    error('connect_allowlist: allow is required (write allow = ["*"] to allow any public host)')
  end
  if type(config.allow) ~= "table" then error("connect_allowlist: allow must be a list of target patterns") end
  local a, b = {}, {}
  for i, pattern in ipairs(config.allow) do
    if type(pattern) ~= "string" then error("connect_allowlist: allow[" .. i .. "] must be a string") end
    if pattern:find(":[%d*]+$") and not pattern:find("^%[[^%]]*%]$") then a[#a + 1] = pattern else b[#b + 1] = pattern end
  end
  with_port, without_port = moongate.hostset(a), moongate.hostset(b)
  local blocks = {}
  for i, entry in ipairs(config.allow_addresses or {}) do
    local block, port = address_entry(entry, i)
    blocks[port] = blocks[port] or {}
    table.insert(blocks[port], block)
  end
  special = {}
  for port, list in pairs(blocks) do special[port] = moongate.cidrset(list) end
  ports = {}
  for _, p in ipairs(config.ports or { 443 }) do
    if math.type(p) ~= "integer" or p < 1 or p > 65535 then
      error("connect_allowlist: ports must be integers from 1 to 65535, got " .. tostring(p))
    end
    ports[p] = true
  end
  via = config.via
  if via ~= nil and type(via) ~= "string" then error("connect_allowlist: via must be a cluster name") end
  if via ~= nil then check_cluster(via, "connect_allowlist: via") end
end

local function allowed()
  if via then return tunnel_via(via) end
  return tunnel()
end

function M.connect(req)
  local target = req.target
  if target == nil then return nil end -- upgrades and extended CONNECT are not ours
  local host, port = target.host, target.port
  local class = ip_class(host)
  if class ~= nil and class ~= "public" then
    local listed = special[port]
    if listed ~= nil and listed:contains(host) then return allowed() end
    return deny(403, REFUSED[class])
  end
  if with_port:match(host, port) or (ports[port] and without_port:match(host, port)) then
    return allowed()
  end
  return nil
end

M.tests = {
  { name = "a public name on 443 is tunnelled", request = "CONNECT example.org:443", expect = "tunnel" },
  { name = "other ports get no opinion (the default 403 applies)", request = "CONNECT example.org:25", expect = "none" },
  { name = "the Host header plays no part", request = "CONNECT example.org:22",
    headers = { host = "example.org:443" }, expect = "none" },
  { name = "loopback is refused", request = "CONNECT 127.0.0.1:443", expect = "deny 403" },
  { name = "loopback in other spellings is refused", request = "CONNECT 2130706433:443", expect = "deny 403" },
  { name = "IPv6 loopback is refused", request = "CONNECT [::1]:443", expect = "deny 403" },
  { name = "IPv4-mapped loopback is refused", request = "CONNECT [::ffff:127.0.0.1]:443", expect = "deny 403" },
  { name = "the metadata address is refused", request = "CONNECT 169.254.169.254:443", expect = "deny 403" },
  { name = "private space is refused", request = "CONNECT 10.1.2.3:443", expect = "deny 403" },
  { name = "CGNAT space is refused", request = "CONNECT 100.64.0.1:443", expect = "deny 403" },
  { name = "a public address literal is tunnelled", request = "CONNECT 93.184.215.14:443", expect = "tunnel" },
  { name = "patterns with wildcards", config = { allow = { "*.example.com" } },
    request = "CONNECT api.example.com:443", expect = "tunnel" },
  { name = "a wildcard does not match the apex", config = { allow = { "*.example.com" } },
    request = "CONNECT example.com:443", expect = "none" },
  { name = "a pattern with its own port", config = { allow = { "db.example.com:5432" } },
    request = "CONNECT db.example.com:5432", expect = "tunnel" },
  { name = "a listed special address is allowed", config = { allow = { "*" }, allow_addresses = { "127.0.0.1:9000" } },
    request = "CONNECT 127.0.0.1:9000", expect = "tunnel" },
  { name = "a listed address is allowed on its own port only",
    config = { allow = { "*" }, allow_addresses = { "127.0.0.1:9000" } },
    request = "CONNECT 127.0.0.1:9001", expect = "deny 403" },
  { name = "a CIDR block with a port allows its addresses on that port",
    config = { allow = { "*" }, allow_addresses = { "127.0.0.0/8:443" } },
    request = "CONNECT 127.0.0.5:443", expect = "tunnel" },
  { name = "a CIDR block allows no other port", config = { allow = { "*" }, allow_addresses = { "127.0.0.0/8:443" } },
    request = "CONNECT 127.0.0.5:8443", expect = "deny 403" },
  { name = "an IPv6 CIDR block with a port", config = { allow = { "*" }, allow_addresses = { "[::1]/128:8443" } },
    request = "CONNECT [::1]:8443", expect = "tunnel" },
  { name = "via sends the CONNECT upstream", config = { allow = { "*" }, via = "parent" }, clusters = { "parent" },
    request = "CONNECT example.org:443", expect = "tunnel_via parent" },
  { name = "extended CONNECT over h2 is matched by its target", request = "h2 CONNECT example.org:443",
    expect = "tunnel" },
  -- Configs this plugin refuses (secure defaults: nothing is allowed unless written down).
  { name = "allow is required", config = { ports = { 443 } }, expect_error = 'write allow = ["*"]' },
  { name = "a bare * in allow_addresses is refused", config = { allow = { "*" }, allow_addresses = { "*" } },
    expect_error = "wildcards are not allowed" },
  { name = "a host pattern in allow_addresses is refused",
    config = { allow = { "*" }, allow_addresses = { "*.internal:443" } }, expect_error = "wildcards are not allowed" },
  { name = "a name in allow_addresses is refused", config = { allow = { "*" }, allow_addresses = { "db.internal:5432" } },
    expect_error = "is not an IP address or CIDR block" },
  { name = "an address without a port is refused", config = { allow = { "*" }, allow_addresses = { "[::1]" } },
    expect_error = "needs a port" },
  { name = "via names a configured cluster", config = { allow = { "*" }, via = "parnet" }, clusters = { "parent" },
    expect_error = "unknown cluster 'parnet' (clusters: parent)" },
}

-- These tests pin their config (any public host on 443 unless a case gives its own), so they pass
-- whatever the live config says; a case without `config` would run with the live config.
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = { allow = { "*" } } end
end

return M
