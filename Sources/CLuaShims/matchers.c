// The host module `moongate`: decision verbs, native matchers built once in `init` and called per
// request (host:port sets, CIDR sets, a host + path-prefix router) and address classes (text helpers: text_helpers.c).
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

// ---- verbs: each returns its interned verb string (upvalue 1) followed by its arguments ----------

static int verb_with_args(lua_State *L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    return n + 1;
}

static void add_verb(lua_State *L, int mg, const char *fname, const char *verb) {
    lua_pushstring(L, verb);
    lua_pushcclosure(L, verb_with_args, 1);
    lua_setfield(L, mg, fname);
}

// ---- helpers -------------------------------------------------------------------------------------------

// Lower-cases a host into `buf` and drops a trailing dot. The callers check `len <= cap` first: a
// host is never truncated (a truncated 300-byte name could end in an allowed suffix).
static size_t fold(const char *p, size_t len, char *buf, size_t cap) {
    if (len > cap) len = cap;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        buf[i] = (char)(c | (((unsigned)(c - 'A') < 26u) << 5));
    }
    while (len > 0 && buf[len - 1] == '.') len--;  // a trailing dot names the same host
    return len;
}

/// A host pattern: exact ("example.org"), suffix ("*.example.org" stored as ".example.org"), or any ("*").
typedef struct host_pat { uint32_t off, len; int kind; } host_pat;
enum { PAT_EXACT = 0, PAT_SUFFIX = 1, PAT_ANY = 2 };

static int pat_match(const char *bytes, host_pat p, const char *h, size_t hl) {
    switch (p.kind) {
    case PAT_ANY: return 1;
    case PAT_EXACT: return hl == p.len && memcmp(bytes + p.off, h, hl) == 0;
    default: return hl > p.len && memcmp(bytes + p.off, h + hl - p.len, p.len) == 0;
    }
}

// Parses "host", "*.suffix", "*" into a pattern (bytes appended to `store`).
static host_pat parse_host_pattern(lua_State *L, const char *s, size_t len, char *store, size_t *used) {
    host_pat p;
    char buf[256];
    if (len == 1 && s[0] == '*') {
        p.kind = PAT_ANY;
        p.off = 0;
        p.len = 0;
        return p;
    }
    if (len > 2 && s[0] == '*' && s[1] == '.') {
        p.kind = PAT_SUFFIX;
        s += 1;
        len -= 1;
    } else {
        p.kind = PAT_EXACT;
    }
    if (len == 0 || len > 253 || memchr(s, '*', len)) luaL_error(L, "invalid host pattern '%s'", s);
    len = fold(s, len, buf, sizeof buf);
    memcpy(store + *used, buf, len);
    p.off = (uint32_t)*used;
    p.len = (uint32_t)len;
    *used += len;
    return p;
}

// ---- hostset: moongate.hostset{ "example.org:443", "*.example.com", "*:443" } --------------------------

typedef struct hostset { int n; size_t used; host_pat *pats; int *ports; char *bytes; } hostset;

static hostset *check_hostset(lua_State *L) { return luaL_checkudata(L, 1, "moongate.hostset"); }

// set:match(host [, port]) -> true when an entry matches host and port (an entry without a port
// matches any port).
static int hostset_match(lua_State *L) {
    hostset *hs = check_hostset(L);
    size_t hl;
    const char *h = luaL_checklstring(L, 2, &hl);
    lua_Integer port = luaL_optinteger(L, 3, 0);
    char buf[256];
    if (hl > 0 && h[0] == '[') {  // bracketed IPv6: match without brackets
        h++;
        hl = hl >= 2 ? hl - 2 : 0;
    }
    if (hl > sizeof buf) {  // longer than any DNS name: matches nothing
        lua_pushboolean(L, 0);
        return 1;
    }
    hl = fold(h, hl, buf, sizeof buf);
    for (int i = 0; i < hs->n; i++) {
        if ((hs->ports[i] == 0 || hs->ports[i] == port) && pat_match(hs->bytes, hs->pats[i], buf, hl)) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int hostset_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    size_t bytes = 0;
    for (int i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING) return luaL_error(L, "hostset: entry %d is not a string", i);
        bytes += lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    size_t size = sizeof(hostset) + (size_t)n * (sizeof(host_pat) + sizeof(int)) + bytes + 1;
    hostset *hs = lua_newuserdatauv(L, size, 0);
    hs->n = n;
    hs->pats = (host_pat *)(hs + 1);
    hs->ports = (int *)(hs->pats + n);
    hs->bytes = (char *)(hs->ports + n);
    hs->used = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        const char *host = s;
        size_t hl = len;
        int port = 0;
        const char *colon = NULL;
        if (len > 0 && s[0] == '[') {
            const char *close = memchr(s, ']', len);
            if (!close) return luaL_error(L, "hostset: invalid entry '%s'", s);
            host = s + 1;
            hl = (size_t)(close - s - 1);
            if ((size_t)(close - s + 1) < len) colon = close + 1;
            if (colon && *colon != ':') return luaL_error(L, "hostset: invalid entry '%s'", s);
        } else {
            colon = memchr(s, ':', len);
            if (colon) hl = (size_t)(colon - s);
        }
        if (colon) {
            const char *ps = colon + 1;
            if (strcmp(ps, "*") != 0) {
                char *end;
                long v = strtol(ps, &end, 10);
                if (*ps == 0 || *end != 0 || v < 1 || v > 65535) return luaL_error(L, "hostset: invalid port in '%s'", s);
                port = (int)v;
            }
        }
        hs->pats[i - 1] = parse_host_pattern(L, host, hl, hs->bytes, &hs->used);
        hs->ports[i - 1] = port;
        lua_pop(L, 1);
    }
    luaL_setmetatable(L, "moongate.hostset");
    return 1;
}

// ---- cidrset: moongate.cidrset{ "10.0.0.0/8", "::1/128", "203.0.113.7" } ---------------------------

typedef struct cidr { int family; int prefix; unsigned char addr[16]; } cidr;
typedef struct cidrset { int n; cidr entries[]; } cidrset;

// Parses an IP literal (brackets allowed). IPv4-mapped IPv6 becomes IPv4. Returns the family or 0.
static int parse_ip(const char *s, size_t len, unsigned char out[16]) {
    char buf[64];
    if (len >= sizeof buf || len == 0) return 0;
    if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    memcpy(buf, s, len);
    buf[len] = 0;
    if (inet_pton(AF_INET, buf, out) == 1) return 4;
    if (inet_pton(AF_INET6, buf, out) == 1) {
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(out, mapped, 12) == 0) {
            memmove(out, out + 12, 4);
            return 4;
        }
        return 6;
    }
    return 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, int prefix) {
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, (size_t)full) != 0) return 0;
    if (rest == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

static int cidrset_contains(lua_State *L) {
    cidrset *cs = luaL_checkudata(L, 1, "moongate.cidrset");
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    unsigned char addr[16];
    int fam = parse_ip(s, len, addr);
    if (fam != 0) {
        for (int i = 0; i < cs->n; i++) {
            if (cs->entries[i].family == fam && prefix_match(cs->entries[i].addr, addr, cs->entries[i].prefix)) {
                lua_pushboolean(L, 1);
                return 1;
            }
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int cidrset_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    cidrset *cs = lua_newuserdatauv(L, sizeof(cidrset) + (size_t)n * sizeof(cidr), 0);
    cs->n = n;
    for (int i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING) return luaL_error(L, "cidrset: entry %d is not a string", i);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        const char *slash = memchr(s, '/', len);
        size_t alen = slash ? (size_t)(slash - s) : len;
        cidr *c = &cs->entries[i - 1];
        memset(c, 0, sizeof *c);
        c->family = parse_ip(s, alen, c->addr);
        if (c->family == 0) return luaL_error(L, "cidrset: invalid address in '%s'", s);
        // "::ffff:10.0.0.0/104" names an IPv4 range written as IPv6: its prefix counts 128 bits
        int mapped = c->family == 4 && memchr(s, ':', alen) != NULL;
        int maxp = c->family == 4 && !mapped ? 32 : 128;
        c->prefix = c->family == 4 ? 32 : 128;
        if (slash) {
            char *end;
            long p = strtol(slash + 1, &end, 10);
            if (slash[1] == 0 || *end != 0 || p < 0 || p > maxp) return luaL_error(L, "cidrset: invalid prefix in '%s'", s);
            if (mapped) p = p >= 96 ? p - 96 : 0;  // move the prefix with the address
            c->prefix = (int)p;
        }
        lua_pop(L, 1);
    }
    luaL_setmetatable(L, "moongate.cidrset");
    return 1;
}

// ---- address classes: moongate.ip_class("10.1.2.3") -> "private" ------------------------------------

static const char *class_v4(const unsigned char *a) {
    if (a[0] == 169 && a[1] == 254 && a[2] == 169 && a[3] == 254) return "metadata";
    if (a[0] == 127) return "loopback";
    if (a[0] == 0) return "unspecified";
    if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168)) return "private";
    if (a[0] == 100 && (a[1] & 0xc0) == 64) return "cgnat";
    if (a[0] == 169 && a[1] == 254) return "linklocal";
    if (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255) return "broadcast";
    if ((a[0] & 0xf0) == 224) return "multicast";
    if ((a[0] & 0xf0) == 240 || (a[0] == 198 && (a[1] & 0xfe) == 18) || (a[0] == 192 && a[1] == 0 && a[2] == 0))
        return "reserved";
    return "public";
}

static const char *class_v6(const unsigned char *a) {
    static const unsigned char zero[16] = { 0 };
    static const unsigned char nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
    static const unsigned char metadata[16] = { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54 };
    if (memcmp(a, metadata, 16) == 0) return "metadata";
    if (memcmp(a, zero, 15) == 0 && a[15] == 1) return "loopback";
    if (memcmp(a, zero, 16) == 0) return "unspecified";
    if (memcmp(a, zero, 12) == 0) return class_v4(a + 12);  // IPv4-compatible (deprecated)
    if (memcmp(a, nat64, 12) == 0) return class_v4(a + 12);
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return "linklocal";
    if ((a[0] & 0xfe) == 0xfc) return "private";
    if (a[0] == 0xff) return "multicast";
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) return "reserved";
    return "public";
}

const char *moon_ip_class(const char *s, size_t len) {
    unsigned char addr[16];
    int fam = parse_ip(s, len, addr);
    if (fam == 4) return class_v4(addr);
    if (fam == 6) return class_v6(addr);
    return NULL;
}

static int ip_class(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *c = moon_ip_class(s, len);
    if (c == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, c);
    return 1;
}

// ---- router: moongate.router{ {host="api.example.com", prefix="/v1/", cluster="api"}, ... } -------
// Most specific host first (exact, then the longest "*." suffix, then any), then the longest prefix.
// match(host, path) returns the route table itself (built once in init, so matching allocates nothing).

typedef struct route_entry { host_pat host; uint32_t poff, plen; int index; } route_entry;
typedef struct router { int n; size_t used; route_entry *routes; char *bytes; } router;

static int route_cmp(const void *x, const void *y) {
    const route_entry *a = x, *b = y;
    if (a->host.kind != b->host.kind) return a->host.kind - b->host.kind;
    if (a->host.len != b->host.len) return (int)b->host.len - (int)a->host.len;
    if (a->plen != b->plen) return (int)b->plen - (int)a->plen;
    return a->index - b->index;
}

static int router_match(lua_State *L) {
    router *r = luaL_checkudata(L, 1, "moongate.router");
    size_t hl, pl;
    const char *h = luaL_optlstring(L, 2, "", &hl);
    const char *p = luaL_optlstring(L, 3, "/", &pl);
    char buf[256];
    const char *colon = memchr(h, ':', hl);
    if (colon && h[0] != '[') hl = (size_t)(colon - h);  // a port in the Host header plays no part
    if (hl > sizeof buf) return 0;  // longer than any DNS name: no route
    hl = fold(h, hl, buf, sizeof buf);
    for (int i = 0; i < r->n; i++) {
        route_entry *e = &r->routes[i];
        if (pat_match(r->bytes, e->host, buf, hl) && pl >= e->plen && memcmp(p, r->bytes + e->poff, e->plen) == 0) {
            lua_getiuservalue(L, 1, 1);
            lua_rawgeti(L, -1, e->index);
            return 1;
        }
    }
    return 0;
}

static int router_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    size_t bytes = 0;
    for (int i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TTABLE) return luaL_error(L, "router: route %d is not a table", i);
        if (lua_getfield(L, -1, "host") == LUA_TSTRING) bytes += lua_rawlen(L, -1);
        if (lua_getfield(L, -2, "prefix") == LUA_TSTRING) bytes += lua_rawlen(L, -1);
        lua_pop(L, 3);
    }
    router *r = lua_newuserdatauv(L, sizeof(router) + (size_t)n * sizeof(route_entry) + bytes + 1, 1);
    r->n = n;
    r->routes = (route_entry *)(r + 1);
    r->bytes = (char *)(r->routes + n);
    r->used = 0;
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        route_entry *e = &r->routes[i - 1];
        e->index = i;
        size_t hl = 1, pl = 1;
        const char *h = "*";
        if (lua_getfield(L, -1, "host") == LUA_TSTRING) h = lua_tolstring(L, -1, &hl);
        else if (!lua_isnil(L, -1)) return luaL_error(L, "router: route %d: host must be a string", i);
        e->host = parse_host_pattern(L, h, hl, r->bytes, &r->used);
        lua_pop(L, 1);
        const char *p = "";
        pl = 0;
        if (lua_getfield(L, -1, "prefix") == LUA_TSTRING) p = lua_tolstring(L, -1, &pl);
        else if (!lua_isnil(L, -1)) return luaL_error(L, "router: route %d: prefix must be a string", i);
        if (pl > 0 && p[0] != '/') return luaL_error(L, "router: route %d: prefix must start with '/'", i);
        memcpy(r->bytes + r->used, p, pl);
        e->poff = (uint32_t)r->used;
        e->plen = (uint32_t)pl;
        r->used += pl;
        lua_pop(L, 1);
        lua_rawseti(L, -2, i);  // the route table itself
    }
    lua_setiuservalue(L, -2, 1);
    qsort(r->routes, (size_t)n, sizeof(route_entry), route_cmp);
    luaL_setmetatable(L, "moongate.router");
    return 1;
}

void moon_register_meta(lua_State *L, const char *name, const luaL_Reg *methods) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
}

void moon_install_matchers(lua_State *L, int mg) {
    static const luaL_Reg hostset_methods[] = { { "match", hostset_match }, { NULL, NULL } };
    static const luaL_Reg cidrset_methods[] = { { "contains", cidrset_contains }, { NULL, NULL } };
    static const luaL_Reg router_methods[] = { { "match", router_match }, { NULL, NULL } };
    moon_register_meta(L, "moongate.hostset", hostset_methods);
    moon_register_meta(L, "moongate.cidrset", cidrset_methods);
    moon_register_meta(L, "moongate.router", router_methods);
    lua_pop(L, 3);
    static const luaL_Reg functions[] = {
        { "hostset", hostset_new }, { "cidrset", cidrset_new }, { "router", router_new },
        { "ip_class", ip_class }, { "base64_encode", moon_base64_encode }, { "base64_decode", moon_base64_decode },
        { "starts_with", moon_starts_with }, { "ends_with", moon_ends_with }, { NULL, NULL },
    };
    lua_pushvalue(L, mg);
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
    // route and tunnel_via name a cluster: clusters.c installs them, checked.
    add_verb(L, mg, "forward", "forward");
    add_verb(L, mg, "tunnel", "tunnel");
    add_verb(L, mg, "deny", "deny");
    add_verb(L, mg, "respond", "respond");
    lua_pushliteral(L, "1");
    lua_setfield(L, mg, "api_version");
}
