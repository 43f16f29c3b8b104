-- host_router: host and path prefix -> cluster; absolute-form requests -> their own authority.
--
-- config:
--   routes            list of { host = "api.example.com" | "*.example.com" | "*", prefix = "/v1/",
--                     cluster = "api" }. The most specific host wins (exact, then the longest
--                     "*." suffix, then "*"), then the longest prefix. The port of Host is ignored.
--                     Each cluster must be a configured one.
--   forward_absolute  true: absolute-form requests (GET http://host/path, forward proxying) go to
--                     their own authority. Default false.
--   forward_ports     ports that forwarded requests may reach. Default { 80 }.
--   allow_addresses   IP literals that may be forwarded to although they are special (loopback,
--                     private, ...); refused otherwise.
--   upgrades          HTTP/1.1 Upgrade tokens (and HTTP/2 extended CONNECT :protocol values) to
--                     enable on matched routes, e.g. { "websocket" }. Default: none, so an upgrade
--                     gets the proxy's default 403.

local route, forward, deny, tunnel, ip_class =
  moongate.route, moongate.forward, moongate.deny, moongate.tunnel, moongate.ip_class

local M = {}

local router, forward_absolute, forward_ports, exact, upgrades

-- The configured cluster names as a set, or nil when they are not known.
local function configured_clusters()
  local known = moongate.clusters()
  if #known == 0 then return nil end
  local set = {}
  for _, name in ipairs(known) do set[name] = true end
  return set, table.concat(known, ", ")
end

function M.init(config)
  local routes = config.routes or {}
  local known, listed = configured_clusters()
  for i, r in ipairs(routes) do
    if type(r) ~= "table" or type(r.cluster) ~= "string" then
      error("host_router: routes[" .. i .. "] needs a cluster name")
    end
    if known ~= nil and not known[r.cluster] then
      error("host_router: routes[" .. i .. "]: unknown cluster '" .. r.cluster .. "' (clusters: " .. listed .. ")")
    end
  end
  router = moongate.router(routes)
  forward_absolute = config.forward_absolute == true
  forward_ports = {}
  for _, p in ipairs(config.forward_ports or { 80 }) do forward_ports[p] = true end
  exact = moongate.hostset(config.allow_addresses or {})
  upgrades = {}
  for _, token in ipairs(config.upgrades or {}) do upgrades[string.lower(token)] = true end
end

-- Upgrades (and extended CONNECT) to an enabled protocol on a route that exists are allowed;
-- the route hook then picks the cluster.
function M.connect(req)
  local protocol = req.upgrade
  if protocol == nil or not upgrades[protocol] then return nil end
  if router:match(req.host, req.path) ~= nil then return tunnel() end
  return nil
end

function M.route(req)
  if forward_absolute and req.form == "absolute" then
    local host, port = req.host, req.port
    if not forward_ports[port] then return deny(403, "forwarding to this port is not allowed") end
    local class = ip_class(host)
    if class ~= nil and class ~= "public" and not exact:match(host, port) then
      return deny(403, "forwarding to this address is not allowed")
    end
    return forward()
  end
  local r = router:match(req.host, req.path)
  if r ~= nil then return route(r.cluster) end
  return nil
end

M.tests = {
  { name = "exact host and prefix", request = "GET /v1/users HTTP/1.1", headers = { host = "api.example.com" },
    config = { routes = { { host = "api.example.com", prefix = "/v1/", cluster = "api" },
                          { host = "*", prefix = "/", cluster = "web" } } },
    expect = "route api" },
  { name = "the longest prefix wins", request = "GET /v1/admin/x HTTP/1.1", headers = { host = "api.example.com" },
    config = { routes = { { host = "api.example.com", prefix = "/v1/", cluster = "api" },
                          { host = "api.example.com", prefix = "/v1/admin/", cluster = "admin" } } },
    expect = "route admin" },
  { name = "wildcard hosts and the port of Host", request = "GET /x HTTP/1.1", headers = { host = "Shop.Example.com:8080" },
    config = { routes = { { host = "*.example.com", cluster = "shops" } } }, expect = "route shops" },
  { name = "no match, no opinion", request = "GET /x HTTP/1.1", headers = { host = "other.test" },
    config = { routes = { { host = "api.example.com", cluster = "api" } } }, expect = "none" },
  { name = "absolute-form is forwarded", request = "GET http://example.org/ HTTP/1.1",
    config = { forward_absolute = true }, expect = "forward" },
  { name = "absolute-form to a private address is refused", request = "GET http://10.0.0.1/ HTTP/1.1",
    config = { forward_absolute = true }, expect = "deny 403" },
  { name = "absolute-form to another port is refused", request = "GET http://example.org:8080/ HTTP/1.1",
    config = { forward_absolute = true }, expect = "deny 403" },
  { name = "an enabled upgrade on a matched route is allowed", request = "GET /chat HTTP/1.1",
    headers = { host = "chat.example.com", upgrade = "websocket", connection = "Upgrade" },
    config = { upgrades = { "websocket" }, routes = { { host = "chat.example.com", cluster = "chat" } } },
    expect = "tunnel" },
  { name = "upgrades are off by default", request = "GET /chat HTTP/1.1",
    headers = { host = "chat.example.com", upgrade = "websocket", connection = "Upgrade" },
    config = { routes = { { host = "chat.example.com", cluster = "chat" } } }, expect = "none" },
  { name = "h2 requests route by :authority", request = "h2 GET https://api.example.com/v1/x",
    config = { routes = { { host = "api.example.com", prefix = "/v1/", cluster = "api" } } }, expect = "route api" },
  { name = "a route to a cluster that is not configured is refused",
    config = { routes = { { host = "api.example.com", cluster = "apii" } } }, clusters = { "api", "web" },
    expect_error = "routes[1]: unknown cluster 'apii' (clusters: api, web)" },
}

-- These tests pin their config (the defaults unless a case gives one) and the clusters they route
-- to, so they pass whatever the live config says; a case without `config` or `clusters` would run
-- with the live ones.
local TEST_CLUSTERS = { "admin", "api", "chat", "shops", "web" }
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = {} end
  if case.clusters == nil then case.clusters = TEST_CLUSTERS end
end

return M
