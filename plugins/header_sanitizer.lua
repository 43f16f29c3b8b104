-- header_sanitizer: remove headers, and add X-Forwarded-For / Forwarded / Via.
--
-- config:
--   remove            request header names to remove before forwarding.
--   remove_response   response header names to remove before answering (e.g. "server").
--   set               { name = value } request headers to set.
--   x_forwarded_for   "append" (default: the client address is appended to what came in),
--                     "replace" (only the client address), or "off".
--   forwarded         true: append an RFC 7239 Forwarded element (for, proto). Default false.
--   via               the pseudonym for Via ("1.1 moongate"); false to leave Via alone. Default "moongate".
-- The sanitization floor (hop-by-hop headers, Connection-named headers, Proxy-Authorization,
-- Proxy-Connection) is applied by the proxy after every script and cannot be undone here.

local M = {}

local remove, remove_response, set, xff, forwarded, via

local function names(list, what)
  local out = {}
  for i, n in ipairs(list or {}) do
    if type(n) ~= "string" or not n:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      error("header_sanitizer: " .. what .. "[" .. i .. "] is not a header name")
    end
    out[#out + 1] = n:lower()
  end
  return out
end

function M.init(config)
  remove = names(config.remove, "remove")
  remove_response = names(config.remove_response, "remove_response")
  set = {}
  for k, v in pairs(config.set or {}) do set[#set + 1] = { k, tostring(v) } end
  xff = config.x_forwarded_for or "append"
  if xff ~= "append" and xff ~= "replace" and xff ~= "off" then
    error("header_sanitizer: x_forwarded_for must be append, replace or off")
  end
  forwarded = config.forwarded == true
  via = config.via
  if via == nil then via = "moongate" end
end

function M.sanitize_request(req, edit)
  for i = 1, #remove do edit:remove(remove[i]) end
  for i = 1, #set do edit:set(set[i][1], set[i][2]) end
  local client = req.client
  local ip = client.ip
  if xff == "append" then
    local prior = req:header("x-forwarded-for")
    edit:set("x-forwarded-for", prior and (prior .. ", " .. ip) or ip)
  elseif xff == "replace" then
    edit:set("x-forwarded-for", ip)
  end
  if forwarded then
    local node = ip:find(":", 1, true) and ('"[' .. ip .. ']"') or ip
    edit:append("forwarded", "for=" .. node .. ";proto=" .. (client.tls and "https" or "http"))
  end
  if via then
    edit:append("via", (req.version == "HTTP/2" and "2 " or "1.1 ") .. via)
  end
end

function M.sanitize_response(req, res, edit)
  for i = 1, #remove_response do edit:remove(remove_response[i]) end
  if via then edit:append("via", (req.version == "HTTP/2" and "2 " or "1.1 ") .. via) end
end

M.tests = {
  { name = "X-Forwarded-For is appended", hook = "sanitize_request", request = "GET http://a.test/ HTTP/1.1",
    client = "203.0.113.9", headers = { ["x-forwarded-for"] = "198.51.100.1" },
    expect_headers = { ["x-forwarded-for"] = "198.51.100.1, 203.0.113.9", via = "1.1 moongate" } },
  { name = "replace drops what the client claimed", hook = "sanitize_request", config = { x_forwarded_for = "replace" },
    request = "GET http://a.test/ HTTP/1.1", client = "203.0.113.9", headers = { ["x-forwarded-for"] = "6.6.6.6" },
    expect_headers = { ["x-forwarded-for"] = "203.0.113.9" } },
  { name = "configured headers are removed", hook = "sanitize_request", config = { remove = { "X-Internal" } },
    request = "GET http://a.test/ HTTP/1.1", headers = { ["x-internal"] = "1", accept = "*/*" },
    expect_absent = { "x-internal" }, expect_headers = { accept = "*/*" } },
  { name = "Forwarded brackets IPv6", hook = "sanitize_request", config = { forwarded = true, via = false },
    request = "GET http://a.test/ HTTP/1.1", client = "2001:db8::7",
    expect_headers = { forwarded = 'for="[2001:db8::7]";proto=http' }, expect_absent = { "via" } },
  { name = "the floor removes hop-by-hop headers", hook = "sanitize_request", request = "GET http://a.test/ HTTP/1.1",
    headers = { connection = "close, x-trace", ["x-trace"] = "1", ["proxy-authorization"] = "Basic eDp5",
                ["keep-alive"] = "timeout=5" },
    expect_absent = { "connection", "x-trace", "proxy-authorization", "keep-alive" } },
}

-- These tests pin their config (the defaults unless a case gives one), so they pass whatever the
-- live config says; a case without `config` would run with the live config.
for _, case in ipairs(M.tests) do
  if case.config == nil then case.config = {} end
end

return M
