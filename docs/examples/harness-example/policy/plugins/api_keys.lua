-- api_keys: requests under /api/ need an X-Api-Key from the config and go to the API cluster;
-- everything else goes to the web cluster. The key never reaches an upstream.
--
-- config:
--   keys         the accepted keys (at least one)
--   api_cluster  the cluster for /api/ (must be configured)
--   web_cluster  the cluster for the rest (must be configured)

local M = {}
local keys, api, web

local function configured(name)
  local known = moongate.clusters()
  if #known == 0 then return true end
  for _, cluster in ipairs(known) do
    if cluster == name then return true end
  end
  return false
end

function M.init(config)
  keys = {}
  for _, key in ipairs(config.keys or {}) do keys[key] = true end
  if next(keys) == nil then error("api_keys: config.keys must list at least one key") end
  api, web = config.api_cluster, config.web_cluster
  for _, name in ipairs({ api, web }) do
    if type(name) ~= "string" or not configured(name) then
      error("api_keys: unknown cluster '" .. tostring(name) .. "'")
    end
  end
end

function M.route(req)
  if moongate.starts_with(req.path or "", "/api/") then
    if keys[req:header("x-api-key") or ""] then return moongate.route(api) end
    return moongate.deny(401, "an API key is needed", { ["www-authenticate"] = 'ApiKey realm="api"' })
  end
  return moongate.route(web)
end

function M.sanitize_request(req, edit)
  edit:remove("x-api-key")
end

local config = { keys = { "k-test" }, api_cluster = "api", web_cluster = "web" }
M.tests = {
  { name = "a known key reaches the API", config = config, clusters = { "api", "web" },
    request = "GET /api/v1/users", headers = { host = "example.com", ["x-api-key"] = "k-test" },
    expect = "route api" },
  { name = "no key: 401 with a challenge", config = config, clusters = { "api", "web" },
    request = "GET /api/v1/users", headers = { host = "example.com" },
    expect = "deny 401", expect_headers = { ["www-authenticate"] = 'ApiKey realm="api"' } },
  { name = "the key never goes upstream", config = config, clusters = { "api", "web" },
    hook = "sanitize_request", request = "GET /api/v1/users",
    headers = { host = "example.com", ["x-api-key"] = "k-test" }, expect_absent = { "x-api-key" } },
  { name = "a misspelt cluster is refused", clusters = { "api", "web" },
    config = { keys = { "k" }, api_cluster = "apj", web_cluster = "web" }, expect_error = "unknown cluster 'apj'" },
}

return M
