// Hook calls on the hot path: push the function and the long-lived views, call under the budget,
// and read the returned verb and arguments without creating a single Lua value.
#include <string.h>
#include "internal.h"

typedef struct hook_args { int fn_ref; int kind; uint64_t deadline_ns; moon_decision *out; } hook_args;

static int verb_of(const char *s, size_t l) {
    switch (l) {
    case 4:
        if (memcmp(s, "deny", 4) == 0) return MOON_VERB_DENY;
        break;
    case 5:
        if (memcmp(s, "route", 5) == 0) return MOON_VERB_ROUTE;
        break;
    case 6:
        if (memcmp(s, "tunnel", 6) == 0) return MOON_VERB_TUNNEL;
        break;
    case 7:
        if (memcmp(s, "forward", 7) == 0) return MOON_VERB_FORWARD;
        if (memcmp(s, "respond", 7) == 0) return MOON_VERB_RESPOND;
        break;
    case 10:
        if (memcmp(s, "tunnel_via", 10) == 0) return MOON_VERB_TUNNEL_VIA;
        break;
    }
    return -1;
}

// Raises an "invalid return" error that names the hook function's file and the line it starts on.
static int invalid(lua_State *L, int fn_ref, const char *what) {
    lua_Debug ar;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0) {
        lua_pushfstring(L, "%s:%d: invalid return value: %s", ar.short_src, ar.linedefined, what);
    } else {
        lua_pushfstring(L, "invalid return value: %s", what);
    }
    return moon_fail(L, MOON_ERR_INVALID);
}

static int read_status(lua_State *L, int fn_ref, int idx, int dflt, int lo) {
    if (lua_isnoneornil(L, idx)) return dflt;
    int isnum = 0;
    lua_Integer st = lua_tointegerx(L, idx, &isnum);
    if (!isnum || lua_type(L, idx) != LUA_TNUMBER || st < lo || st > 599) {
        invalid(L, fn_ref, lo >= 400 ? "deny needs a status from 400 to 599" : "respond needs a status from 200 to 599");
    }
    return (int)st;
}

static void read_string(lua_State *L, int fn_ref, int idx, size_t max, const char *what, moon_decision *out, int required) {
    if (lua_isnoneornil(L, idx)) {
        if (required) invalid(L, fn_ref, what);
        out->arg = NULL;
        out->arg_len = 0;
        return;
    }
    if (lua_type(L, idx) != LUA_TSTRING) invalid(L, fn_ref, what);
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > max || (required && len == 0)) invalid(L, fn_ref, what);
    out->arg = s;
    out->arg_len = len;
}

static void read_headers(lua_State *L, int fn_ref, int idx, moon_decision *out) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (lua_isnoneornil(L, idx)) return;
    if (lua_type(L, idx) != LUA_TTABLE) invalid(L, fn_ref, "response headers must be a table of name = value");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            invalid(L, fn_ref, "response headers must be a table of name = value strings");
        }
        size_t nl, vl;
        const char *n = lua_tolstring(L, -2, &nl);
        const char *v = lua_tolstring(L, -1, &vl);
        if (!moon_is_token(n, nl) || nl > MOON_MAX_NAME) invalid(L, fn_ref, "a response header name is not a token");
        if (vl > MOON_MAX_VALUE || !moon_value_ok(v, vl)) {
            invalid(L, fn_ref, "a response header value has control characters or is over 8 KiB");
        }
        moon_add_edit(L, ctx, MOON_EDIT_SET, n, nl, v, vl);
        out->header_count++;
        lua_pop(L, 1);
    }
}

// The options of tunnel / tunnel_via: { tls = true } or { tls = { sni = "name", verify = true } }.
// Strings stay valid: the table holding them is a return value, on the stack until moon_call_end.
static void read_tunnel_options(lua_State *L, int fn_ref, int idx, moon_decision *out) {
    if (lua_isnoneornil(L, idx)) return;
    if (lua_type(L, idx) != LUA_TTABLE) invalid(L, fn_ref, "tunnel options must be a table: { tls = { sni = ..., verify = ... } }");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kl = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
        if (k == NULL || kl != 3 || memcmp(k, "tls", 3) != 0) invalid(L, fn_ref, "tunnel options take only tls");
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "tls");
    int t = lua_type(L, -1);
    if (t == LUA_TBOOLEAN) {
        out->tls = lua_toboolean(L, -1);
        out->tls_verify = 1;
    } else if (t == LUA_TTABLE) {
        int tls = lua_gettop(L);
        out->tls = 1;
        out->tls_verify = 1;
        lua_pushnil(L);
        while (lua_next(L, tls) != 0) {
            size_t kl = 0;
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
            int known = k && ((kl == 3 && memcmp(k, "sni", 3) == 0) || (kl == 6 && memcmp(k, "verify", 6) == 0));
            if (!known) invalid(L, fn_ref, "tls takes only sni and verify");
            lua_pop(L, 1);
        }
        lua_getfield(L, tls, "sni");
        if (lua_type(L, -1) == LUA_TSTRING) {
            out->tls_sni = lua_tolstring(L, -1, &out->tls_sni_len);
            if (out->tls_sni_len == 0 || out->tls_sni_len > 253) invalid(L, fn_ref, "tls.sni must be a host name");
        } else if (!lua_isnil(L, -1)) {
            invalid(L, fn_ref, "tls.sni must be a string");
        }
        lua_pop(L, 1);
        lua_getfield(L, tls, "verify");
        if (lua_type(L, -1) == LUA_TBOOLEAN) out->tls_verify = lua_toboolean(L, -1);
        else if (!lua_isnil(L, -1)) invalid(L, fn_ref, "tls.verify must be true or false");
        lua_pop(L, 1);
    } else if (t != LUA_TNIL) {
        invalid(L, fn_ref, "tls must be true, false or a table { sni = ..., verify = ... }");
    }
    lua_pop(L, 1);
}

static void decode(lua_State *L, int fn_ref, int base, moon_decision *out) {
    int v = base + 1;
    out->verb = MOON_VERB_NONE;
    out->status = 0;
    out->arg = NULL;
    out->arg_len = 0;
    out->header_count = 0;
    out->tls = 0;
    out->tls_verify = 1;
    out->tls_sni = NULL;
    out->tls_sni_len = 0;
    int t = lua_type(L, v);
    if (t == LUA_TNIL) return;
    if (t != LUA_TSTRING) invalid(L, fn_ref, "expected a verb (moongate.route(...), moongate.deny(...), ...) or nil");
    size_t l;
    const char *s = lua_tolstring(L, v, &l);
    int verb = verb_of(s, l);
    if (verb < 0) invalid(L, fn_ref, "unknown verb");
    out->verb = verb;
    switch (verb) {
    case MOON_VERB_ROUTE:
    case MOON_VERB_TUNNEL_VIA:
        read_string(L, fn_ref, v + 1, 256, "route and tunnel_via need a cluster name", out, 1);
        if (!moon_cluster_ok(moon_ctx_of(L), out->arg, out->arg_len)) {
            invalid(L, fn_ref, "route and tunnel_via need the name of a configured cluster");
        }
        if (verb == MOON_VERB_TUNNEL_VIA) read_tunnel_options(L, fn_ref, v + 2, out);
        break;
    case MOON_VERB_TUNNEL:
        read_tunnel_options(L, fn_ref, v + 1, out);
        break;
    case MOON_VERB_DENY:
        out->status = read_status(L, fn_ref, v + 1, 403, 400);
        read_string(L, fn_ref, v + 2, 1024, "deny's reason must be a string of at most 1024 bytes", out, 0);
        if (out->arg && !moon_value_ok(out->arg, out->arg_len)) invalid(L, fn_ref, "deny's reason has control characters");
        read_headers(L, fn_ref, v + 3, out);
        break;
    case MOON_VERB_RESPOND:
        out->status = read_status(L, fn_ref, v + 1, 200, 200);
        read_string(L, fn_ref, v + 2, MOON_MAX_BODY, "respond's body must be a string of at most 64 KiB", out, 0);
        read_headers(L, fn_ref, v + 3, out);
        break;
    default:
        break;
    }
}

static int call_hook(lua_State *L) {
    hook_args *a = lua_touserdata(L, 1);
    moon_ctx *ctx = moon_ctx_of(L);
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->fn_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->req_ref);
    int nargs = 1;
    if (a->kind == MOON_HOOK_SANITIZE_RESPONSE || a->kind == MOON_HOOK_LOG) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->res_ref);
        nargs++;
    }
    if (a->kind == MOON_HOOK_SANITIZE_REQUEST || a->kind == MOON_HOOK_SANITIZE_RESPONSE) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->edit_ref);
        nargs++;
    }
    ctx->in_call = 1;
    moon_arm_call(L, a->deadline_ns);
    lua_call(L, nargs, 4);
    ctx->in_call = 0;
    if (a->kind == MOON_HOOK_DECIDE) decode(L, a->fn_ref, base, a->out);
    return 4;
}

int moon_call_hook(lua_State *L, int fn_ref, int kind, moon_decision *out) {
    return moon_call_hook_within(L, fn_ref, kind, moon_ctx_of(L)->call_deadline_ns, out);
}

int moon_call_hook_within(lua_State *L, int fn_ref, int kind, uint64_t deadline_ns, moon_decision *out) {
    moon_ctx *ctx = moon_ctx_of(L);
    hook_args a = { fn_ref, kind, deadline_ns, out };
    ctx->call_base = lua_gettop(L);
    int status = moon_pcall(L, call_hook, &a, 4);
    ctx->in_call = 0;
    moon_disarm(L);
    if (status != MOON_OK) lua_settop(L, ctx->call_base);
    return status;
}

void moon_call_end(lua_State *L) { lua_settop(L, moon_ctx_of(L)->call_base); }
