-- connect_allowlist: which CONNECT targets may be tunnelled.
--
-- config:
--   allow            list of target patterns: "example.org", "*.example.com", "*" (any host),
--                    optionally with a port: "example.org:8443", "*.example.com:*".
--                    Default: { "*" } (any public host, on the allowed ports).
--   ports            ports allowed for patterns written without one. Default: { 443 }.
--   allow_addresses  IP literals that may be tunnelled although they are loopback, private,
--                    link-local, CGNAT, metadata or otherwise special ("127.0.0.1:8443", "[::1]").
--                    Special addresses are refused unless listed here exactly.
--   via              a cluster name: send allowed CONNECTs to that upstream proxy (tunnel_via)
--                    instead of terminating them here.
--
-- A target that is not allowed gets no opinion from this plugin, and the proxy's default (403,
-- CONNECT is off unless a plugin enables it) applies. A special address is denied outright.
-- The proxy also checks the addresses a name resolves to (a name that resolves to a private
-- address is refused unless that address is listed), so an allowlist of names cannot become SSRF.

local tunnel, tunnel_via, deny, ip_class = moongate.tunnel, moongate.tunnel_via, moongate.deny, moongate.ip_class

local M = {}

local with_port, without_port, exact, ports, via
local REFUSED = {}
for _, class in ipairs({ "loopback", "private", "linklocal", "cgnat", "metadata", "unspecified",
                         "multicast", "broadcast", "reserved" }) do
  REFUSED[class] = "CONNECT to a " .. class .. " address is not allowed"
end

function M.init(config)
  local a, b = {}, {}
  for i, pattern in ipairs(config.allow or { "*" }) do
    if type(pattern) ~= "string" then error("connect_allowlist: allow[" .. i .. "] must be a string") end
    if pattern:find(":[%d*]+$") and not pattern:find("^%[[^%]]*%]$") then a[#a + 1] = pattern else b[#b + 1] = pattern end
  end
  with_port, without_port = moongate.hostset(a), moongate.hostset(b)
  exact = moongate.hostset(config.allow_addresses or {})
  ports = {}
  for _, p in ipairs(config.ports or { 443 }) do
    if math.type(p) ~= "integer" or p < 1 or p > 65535 then
      error("connect_allowlist: ports must be integers from 1 to 65535, got " .. tostring(p))
    end
    ports[p] = true
  end
  via = config.via
  if via ~= nil and type(via) ~= "string" then error("connect_allowlist: via must be a cluster name") end
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
    if exact:match(host, port) then return allowed() end
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
  { name = "a listed special address is allowed", config = { allow_addresses = { "127.0.0.1:9000" } },
    request = "CONNECT 127.0.0.1:9000", expect = "tunnel" },
  { name = "via sends the CONNECT upstream", config = { via = "parent" },
    request = "CONNECT example.org:443", expect = "tunnel_via parent" },
  { name = "extended CONNECT over h2 is matched by its target", request = "h2 CONNECT example.org:443",
    expect = "tunnel" },
}

-- These tests pin their config (the defaults unless a case gives one), so they pass whatever the
-- live config says; a case without `config` would run with the live config.
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = {} end
end

return M
