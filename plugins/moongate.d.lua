---@meta
-- LuaLS type stubs for Moongate plugins: put this folder on your editor's Lua library path
-- (`"Lua.workspace.library": ["plugins"]`) and the whole API completes and type-checks.
--
-- A plugin is a file that returns a table of hooks. Every hook is optional:
--
--   local M = {}
--   function M.init(config) ... end                  -- once per load, with the plugin's config
--   function M.route(req) return moongate.route("api") end
--   function M.connect(req) return moongate.tunnel() end
--   function M.sanitize_request(req, edit) edit:set("x-env", "prod") end
--   function M.sanitize_response(req, res, edit) edit:remove("server") end
--   function M.log(req, res) end
--   M.tests = { { name = "...", request = "CONNECT example.org:443", expect = "tunnel" } }
--   return M
--
-- A test case (an entry of M.tests, or a line of a JSONL fixture) has: name, request, headers,
-- client, tls (true, or a table of the moongate.TLS fields: { sni = "a.test", alpn = "h2",
-- subject = "CN=alice", sans = { "alice.test" } }), and what it expects: expect ("tunnel", "route api", "deny 403", "none"),
-- expect_headers, expect_absent, expect_plugin. A plugin's own tests may also have hook, config
-- (the plugin's config for this case), clusters (the cluster names it runs with) and expect_error
-- (text the plugin's load error must contain: the case's config must be refused). Any other key is
-- an error naming the key, the file and the line; so is an expectation naming a cluster that is not
-- configured.
--
-- How plugins compose (lower `priority` runs first):
--   route    the first non-nil answer wins; no answer at all is a 404.
--   connect  (CONNECT, extended CONNECT, upgrades) any deny/respond wins, else the first tunnel,
--            else the default: 403, because CONNECT is off unless a plugin enables it. An upgrade
--            that is enabled is then routed by the route hooks.
--   sanitize_* every plugin runs; then the floor (hop-by-hop headers, headers named in Connection,
--            Proxy-Authorization, Proxy-Connection) is applied and cannot be undone.
-- A runtime error, a budget, deadline or memory-cap hit, or an invalid return value fails the request
-- closed with a 500, logged with the file and line and counted per plugin and hook. The deadline
-- (policy.hook_deadline, 10 ms) covers library calls too: Lua patterns, table functions, everything.
--
-- Sandbox: string, table, math, utf8, the moongate module and safe base functions only (no io,
-- os, package/require, debug, coroutine, string.dump, rawset, binary chunks; collectgarbage only
-- "count"; no __gc metamethods). Globals are read-only once the plugin has loaded: keep state in
-- locals (upvalues). Strings are at most 1 MiB. Lua patterns backtrack, so on request data a bad
-- pattern spends the whole deadline and fails the request: match request data with
-- moongate.starts_with / ends_with, the native matchers and moongate.regex (RE2, linear time).
--
-- Output: moongate.log(level, message, fields) and print(...) go to the proxy's log (swift-log,
-- label moongate.script) with the plugin, file and line; never to standard output.

---@class moongate.Target
---@field host string  normalised: lower-case, no trailing dot, IPv4 dotted-quad, IPv6 in brackets
---@field port integer

---@class moongate.Client
---@field ip string
---@field port integer
---@field tls false|moongate.TLS  false for a cleartext client, else the TLS session (so `client.tls and ...` works)

---The client's TLS session, as the handshake settled it. The certificate fields are set only for a
---client certificate that verified against the listener's `client_ca`.
---@class moongate.TLS
---@field version string|nil       "TLSv1.2" or "TLSv1.3"
---@field alpn string|nil          "h2", "http/1.1", or nil when the client offered no ALPN
---@field sni string|nil           the server name the client asked for, lower-case
---@field cipher string|nil        the cipher suite's standard name, when known
---@field subject string|nil       the client certificate's subject, "CN=alice,O=Example"
---@field sans string[]|nil        its subjectAltName entries (DNS names, e-mails, URIs, IPs); a new list per read
---@field sha256 string|nil        the SHA-256 fingerprint of its DER form, lower-case hex

---The request being decided. Fields are read lazily from the proxy's copy; nothing is converted
---to Lua until read. The object is long-lived and reused: do not keep it beyond the hook call
---(outside a call every field reads nil).
---@class moongate.Request
---@field method string            "GET", "CONNECT", ...
---@field scheme string|nil        "http"/"https" for absolute-form and HTTP/2 requests
---@field authority string|nil     as received: CONNECT target, absolute URI authority, :authority or Host
---@field host string|nil          normalised host, without port
---@field port integer|nil
---@field path string|nil          without the query; nil for a classic CONNECT
---@field query string|nil         without the '?'
---@field form string              "absolute" (forward proxying), "origin", "authority" (CONNECT), "asterisk"
---@field version string           "HTTP/1.1", "HTTP/1.0" or "HTTP/2"
---@field protocol string|nil      :protocol of an HTTP/2 extended CONNECT (RFC 8441)
---@field upgrade string|nil       the Upgrade token of an HTTP/1.1 upgrade ("websocket")
---@field target moongate.Target|nil  the CONNECT target (host:port); the Host header plays no part
---@field client moongate.Client
local Request = {}

---The first value of a header (names are case-insensitive), or nil.
---@param name string
---@return string|nil
function Request:header(name) end

---Iterates over headers: every header, or only those named `name`.
---@param name? string
---@return fun(): string, string
function Request:headers(name) end

---A response on its way to the client (sanitize_response, log).
---@class moongate.Response
---@field status integer
local Response = {}

---@param name string
---@return string|nil
function Response:header(name) end

---@param name? string
---@return fun(): string, string
function Response:headers(name) end

---Header edits, applied after every plugin has run (then the floor).
---@class moongate.Edit
local Edit = {}
---@param name string
function Edit:remove(name) end
---@param name string
---@param value string
function Edit:set(name, value) end
---@param name string
---@param value string
function Edit:append(name, value) end

---A set of host[:port] patterns: "example.org", "*.example.org" (subdomains, not the apex), "*",
---each with an optional ":port" or ":*". Built in init, matched per request without allocating.
---@class moongate.HostSet
local HostSet = {}
---@param host string
---@param port? integer
---@return boolean
function HostSet:match(host, port) end

---A set of addresses and CIDR blocks ("10.0.0.0/8", "::1/128", "203.0.113.7").
---@class moongate.CidrSet
local CidrSet = {}
---@param ip string
---@return boolean
function CidrSet:contains(ip) end

---A host + path-prefix router; match returns the route table given to moongate.router.
---@class moongate.Router
local Router = {}
---@param host string|nil
---@param path string|nil
---@return table|nil
function Router:match(host, path) end

---An RE2 regular expression (moongate.regex): matched in time linear in the input, never by
---backtracking, so request data cannot make it run away. Perl-like syntax without backreferences
---or lookaround (https://github.com/google/re2/wiki/Syntax). `init` counts like string.find's
---(negative from the end); `^` still anchors at the start of the subject, not at `init`.
---@class moongate.Regex
local Regex = {}

---The captures (false for a group that did not take part), the whole match when the pattern has
---no groups, or nil when it does not match, like string.match.
---@param s string
---@param init? integer
---@return string|false|nil ...
function Regex:match(s, init) end

---Start and end of the match (1-based, inclusive) followed by the captures, or nil, like string.find.
---@param s string
---@param init? integer
---@return integer|nil start
---@return integer|nil last
---@return string|false ...
function Regex:find(s, init) end

---Whether the pattern matches anywhere in s (the fastest of the three).
---@param s string
---@return boolean
function Regex:test(s) end

---Users and password hashes from an htpasswd file (moongate.htpasswd).
---@class moongate.Htpasswd
local Htpasswd = {}

---Whether `password` is the password of `user`. An unknown user is false at once (no hashing); a
---credential checked before (right or wrong) is answered from a cache of 1,024 without hashing;
---otherwise crypt(3) runs once (bcrypt cost 10: tens of ms), and only if its estimated time fits in
---what is left of the hook's deadline (else a deadline fault, before any work).
---@param user string
---@param password string
---@return boolean
function Htpasswd:check(user, password) end

---Counters of this object (each event loop has its own): the users of the file, the credentials in
---the cache, and the checks of known users answered from the cache (`hits`) or by crypt(3) (`misses`).
---@return { users: integer, cached: integer, hits: integer, misses: integer }
function Htpasswd:stats() end

---@alias moongate.Verb "route"|"forward"|"tunnel"|"tunnel_via"|"deny"|"respond"

---@class moongate
moongate = {}

---@type string
moongate.api_version = "1"

---Send the request to a cluster. When the configured clusters are known (see moongate.clusters),
---a name that is not one of them is a fault here, naming this file and line and the clusters.
---@param cluster string
---@return moongate.Verb, string
function moongate.route(cluster) end

---Send the request to its own authority (forward proxying).
---@return moongate.Verb
function moongate.forward() end

---How Moongate speaks to a tunnel's target: `tls = true`, or a table. With TLS, the client sends
---cleartext in the tunnel and Moongate encrypts it toward the target (verified against the config's
---`tunnel_tls.ca_file`, else the system trust store); a handshake or check that fails is a 503.
---@class moongate.TunnelOptions
---@field tls boolean|{ sni: string|nil, verify: boolean|nil }|nil  sni: default the target's host; verify: default true

---Terminate the CONNECT here: connect to the target, answer 200, relay bytes.
---@param options? moongate.TunnelOptions
---@return moongate.Verb, moongate.TunnelOptions|nil
function moongate.tunnel(options) end

---Send the CONNECT on to a cluster (an upstream proxy) that terminates it. Checked like
---moongate.route. With `{ tls = ... }`, Moongate runs TLS toward the target inside the parent's
---tunnel (the client sends cleartext; the parent sees ciphertext).
---@param cluster string
---@param options? moongate.TunnelOptions
---@return moongate.Verb, string, moongate.TunnelOptions|nil
function moongate.tunnel_via(cluster, options) end

---The names of the configured clusters, sorted (a new table each call). Empty when they are not
---known (a policy loaded without a config, as in some tests): then nothing is checked. Check the
---clusters your config names in init, so a misspelt one is refused before any traffic:
---
---  local known = moongate.clusters()
---  if #known > 0 and not contains(known, config.cluster) then error("unknown cluster ...") end
---@return string[]
function moongate.clusters() end

---@alias moongate.LogLevel "debug"|"info"|"notice"|"warning"|"error"

---Writes a line to the proxy's log (swift-log, label `moongate.script`, the level's own swift-log
---level) with metadata `plugin`, `file`, `line` (this call's line) and `fields`. The line is queued
---during the call and logged once the call returns, also when the call then fails.
---Bounds: a message of at most 4 KiB and field values of at most 1 KiB (longer ones are cut and the
---line gets `truncated=true`); control characters but the tab are escaped (`\n`, `\x00`), so a line
---cannot forge another; at most 16 fields, named by 1-64 letters, digits, '_', '-' or '.' (not
---plugin, file, line, dropped or truncated), each a string, number or boolean. Each plugin may log
---100 lines a second in each Lua state (bursts of 100); lines over that are dropped and their count
---is the next line's `dropped`. A wrong argument is an error, like every other API misuse.
---@param level moongate.LogLevel
---@param message string
---@param fields? table<string, string|number|boolean>
function moongate.log(level, message, fields) end

---Logs its arguments at debug level, converted as tostring does and joined by tabs (moongate.log's
---bounds and rate limit apply). Never writes to standard output.
---@param ... any
function print(...) end

---Refuse: status 400-599 (default 403), a reason, extra response headers.
---@param status? integer
---@param reason? string
---@param headers? table<string, string>
---@return moongate.Verb, integer, string|nil, table|nil
function moongate.deny(status, reason, headers) end

---Answer locally: status 200-599, a body (at most 64 KiB), headers.
---@param status integer
---@param body? string
---@param headers? table<string, string>
---@return moongate.Verb, integer, string|nil, table|nil
function moongate.respond(status, body, headers) end

---@param patterns string[]
---@return moongate.HostSet
function moongate.hostset(patterns) end

---@param blocks string[]
---@return moongate.CidrSet
function moongate.cidrset(blocks) end

---@param routes { host?: string, prefix?: string, cluster?: string }[]
---@return moongate.Router
function moongate.router(routes) end

---The class of an IP literal, or nil for a name: "public", "loopback", "private", "linklocal",
---"cgnat", "metadata", "unspecified", "multicast", "broadcast", "reserved". IPv4-mapped IPv6 is
---classed by its IPv4 address.
---@param host string
---@return string|nil
function moongate.ip_class(host) end

---@param s string
---@return string
function moongate.base64_encode(s) end

---@param s string
---@return string|nil
function moongate.base64_decode(s) end

---Compiles an RE2 regular expression (linear time in the subject): build it when the plugin loads
---(module body or init; compiling in a hook is an error), match it per request. An invalid pattern,
---one over 16 KiB, or one whose program is over 5,000 instructions is an error naming RE2's reason.
---A match whose subject length times program size is over 16 Mi is refused (about 80 ms of RE2's
---slowest path): keep regexes small. Each regex counts about 258 KiB against the state's memory cap
---(RE2's memory budget for it), given back when it is collected. Options: `caseless` ignores case; `latin1`
---treats the pattern and the subjects as Latin-1 bytes instead of UTF-8.
---@param pattern string
---@param options? { caseless?: boolean, latin1?: boolean }
---@return moongate.Regex
function moongate.regex(pattern, options) end

---@param s string
---@param prefix string
---@return boolean
function moongate.starts_with(s, prefix) end

---@param s string
---@param suffix string
---@return boolean
function moongate.ends_with(s, suffix) end

---Loads an htpasswd file (`name:hash` lines; blank lines and `#` comments skipped) whose hashes are
---bcrypt (`$2y$`, `$2b$`) or SHA-crypt (`$5$`, `$6$`); MD5 (`$apr1$`), SHA-1 (`{SHA}`) and DES are
---refused. Call it when the plugin loads (module body or init; in a hook it is an error). A relative
---path is relative to the config file's folder. The file is read once per generation and watched
---like a script: a change reloads the policy. A malformed line is an error naming the file and line
---(never the hash); so is a hash slower to verify on this machine than the plugin's hook deadline
---(the message gives the `hook_deadline` to set). At most 4 MiB; counted against the memory cap.
---@param path string
---@return moongate.Htpasswd
function moongate.htpasswd(path) end
