-- proxy_auth: Basic Proxy-Authorization against configured users; 407 when missing or wrong.
--
-- config:
--   users       { name = "password", ... } (at least one)
--   realm       the realm in Proxy-Authenticate. Default "moongate".
--   applies_to  "all" (CONNECT and forwarded requests, the default) or "connect".
-- Give this plugin a lower priority number than the routing plugins so it runs first.
-- The Proxy-Authorization header never reaches an upstream (the sanitization floor removes it).

local deny = moongate.deny

local M = {}

local accepted, challenge, all
-- "Basic <token>": the scheme case-insensitively (RFC 9110 §11.1), one or more spaces, a token68.
-- A regex, not a Lua pattern: the header is the client's.
local basic = moongate.regex("^[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+=*)$")

function M.init(config)
  accepted = {}
  local count = 0
  for user, password in pairs(config.users or {}) do
    if type(user) ~= "string" or type(password) ~= "string" or user:find(":", 1, true) then
      error("proxy_auth: users must map names (without ':') to password strings")
    end
    accepted[moongate.base64_encode(user .. ":" .. password)] = user
    count = count + 1
  end
  if count == 0 then error("proxy_auth: config.users must name at least one user") end
  local realm = config.realm or "moongate"
  challenge = { ["proxy-authenticate"] = 'Basic realm="' .. realm .. '"' }
  all = (config.applies_to or "all") == "all"
end

local function check(req)
  local credentials = req:header("proxy-authorization")
  if credentials ~= nil then
    local token = basic:match(credentials)
    if token ~= nil and accepted[token] ~= nil then return nil end
  end
  return deny(407, "proxy authentication required", challenge)
end

function M.connect(req) return check(req) end

function M.route(req)
  if all then return check(req) end
  return nil
end

local config = { users = { alice = "wonderland" } }
M.tests = {
  { name = "no credentials: 407 with a challenge", config = config, request = "CONNECT example.org:443",
    expect = "deny 407", expect_headers = { ["proxy-authenticate"] = 'Basic realm="moongate"' } },
  { name = "good credentials: no opinion, the next plugin decides", config = config,
    request = "CONNECT example.org:443",
    headers = { ["proxy-authorization"] = "Basic YWxpY2U6d29uZGVybGFuZA==" }, expect = "none" },
  { name = "the scheme is case-insensitive", config = config, request = "CONNECT example.org:443",
    headers = { ["proxy-authorization"] = "basic YWxpY2U6d29uZGVybGFuZA==" }, expect = "none" },
  { name = "an 8 KiB header that almost matches is refused (linear time)", config = config,
    request = "CONNECT example.org:443",
    headers = { ["proxy-authorization"] = "Basic " .. string.rep("A", 8000) .. "=!" }, expect = "deny 407" },
  { name = "a wrong password: 407", config = config, request = "CONNECT example.org:443",
    headers = { ["proxy-authorization"] = "Basic YWxpY2U6d3Jvbmc=" }, expect = "deny 407" },
  { name = "forwarded requests too", config = config, request = "GET http://example.org/ HTTP/1.1", expect = "deny 407" },
  { name = "connect only", config = { users = { alice = "wonderland" }, applies_to = "connect" },
    request = "GET http://example.org/ HTTP/1.1", expect = "none" },
}

-- These tests pin their config (the defaults unless a case gives one), so they pass whatever the
-- live config says; a case without `config` would run with the live config.
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = {} end
end

return M
