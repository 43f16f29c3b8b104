-- proxy_auth: Basic Proxy-Authorization against an htpasswd file (or users in the config); 407 when
-- missing or wrong.
--
-- config (users_file or users, not both):
--   users_file  an htpasswd file (relative to the config file's folder): `name:hash` lines with
--               bcrypt ($2y$, $2b$: `htpasswd -B`) or SHA-crypt ($5$, $6$: `openssl passwd -6`)
--               hashes, checked through crypt(3) with a cache of 1,024 verified credentials. It is
--               part of the generation: a change reloads the policy like a script change.
--               bcrypt is slow on purpose (cost 10: tens of ms per password not in the cache), and
--               crypt(3) cannot be interrupted: a file whose hashes take longer to verify than this
--               plugin's hook deadline is refused when it loads. Give the plugin's entry its own
--               `hook_deadline` (the message says how much), or use SHA-crypt.
--   users       { name = "password", ... }: passwords in plain text (`moongate validate` warns).
--   realm       the realm in Proxy-Authenticate. Default "moongate".
--   applies_to  "all" (CONNECT and forwarded requests, the default) or "connect".
-- Give this plugin a lower priority number than the routing plugins so it runs first.
-- The Proxy-Authorization header never reaches an upstream (the sanitization floor removes it).

local deny = moongate.deny

local M = {}

local accepted, users, challenge, all
-- "Basic <token>": the scheme case-insensitively (RFC 9110 §11.1), one or more spaces, a token68.
-- A regex, not a Lua pattern: the header is the client's.
local basic = moongate.regex("^[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+=*)$")

function M.init(config)
  accepted, users = {}, nil
  if config.users_file ~= nil then
    if config.users ~= nil then error("proxy_auth: give users_file or users, not both") end
    if type(config.users_file) ~= "string" then error("proxy_auth: users_file must be a file path") end
    users = moongate.htpasswd(config.users_file)
  end
  local count = users and 1 or 0
  for user, password in pairs(config.users or {}) do
    if type(user) ~= "string" or type(password) ~= "string" or user:find(":", 1, true) then
      error("proxy_auth: users must map names (without ':') to password strings")
    end
    accepted[moongate.base64_encode(user .. ":" .. password)] = user
    count = count + 1
  end
  if count == 0 then error("proxy_auth: config.users_file (or config.users) must name at least one user") end
  local realm = config.realm or "moongate"
  challenge = { ["proxy-authenticate"] = 'Basic realm="' .. realm .. '"' }
  all = (config.applies_to or "all") == "all"
end

local function check(req)
  local credentials = req:header("proxy-authorization")
  if credentials ~= nil then
    local token = basic:match(credentials)
    if token ~= nil then
      if users == nil then
        if accepted[token] ~= nil then return nil end
      else
        local pair = moongate.base64_decode(token)
        local colon = pair and pair:find(":", 1, true)
        if colon and users:check(pair:sub(1, colon - 1), pair:sub(colon + 1)) then return nil end
      end
    end
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
  { name = "users_file and users together are refused",
    config = { users = { alice = "wonderland" }, users_file = "users.htpasswd" }, expect_error = "not both" },
  { name = "a users_file that cannot be read is refused",
    config = { users_file = "no-such-folder/users.htpasswd" }, expect_error = "cannot read" },
  { name = "no users at all is refused", config = { realm = "x" }, expect_error = "must name at least one user" },
}

-- These tests pin their config (the defaults unless a case gives one), so they pass whatever the
-- live config says; a case without `config` would run with the live config.
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = {} end
end

return M
