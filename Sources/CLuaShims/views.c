// The request and response views: long-lived userdata whose C __index reads the staged message
// lazily (nothing becomes a Lua value until a script reads it), and the header edit object.
#include <stdint.h>
#include <string.h>
#include "internal.h"

// ---- staging (plain C; never raises) ---------------------------------------------------------------

static void msg_reset(moon_msg *m) {
    moon_arena_reset(&m->arena);
    for (int i = 0; i < MOON_F_COUNT; i++) m->fields[i].off = MOON_ABSENT;
    m->nheaders = 0;
    m->status = 0;
    m->target_port = m->port = m->client_port = 0;
    m->tls = 0;
}

static void msg_add_header(moon_msg *m, const char *n, size_t nlen, const char *v, size_t vlen) {
    if (m->nheaders >= MOON_MAX_HEADERS) return;
    moon_span ns = moon_arena_put(&m->arena, n, nlen, 1);
    moon_span vs = moon_arena_put(&m->arena, v, vlen, 0);
    if (ns.off == MOON_ABSENT || vs.off == MOON_ABSENT) return;
    m->names[m->nheaders] = ns;
    m->values[m->nheaders] = vs;
    m->nheaders++;
}

void moon_req_reset(lua_State *L) { msg_reset(&moon_ctx_of(L)->req); }

void moon_req_set(lua_State *L, int field, const char *p, size_t len) {
    moon_msg *m = &moon_ctx_of(L)->req;
    if (field < 0 || field >= MOON_F_COUNT) return;
    m->fields[field] = p ? moon_arena_put(&m->arena, p, len, 0) : (moon_span){ MOON_ABSENT, 0 };
}

void moon_req_set_ints(lua_State *L, int target_port, int port, int client_port, int tls) {
    moon_msg *m = &moon_ctx_of(L)->req;
    m->target_port = target_port;
    m->port = port;
    m->client_port = client_port;
    m->tls = tls;
}

void moon_req_add_header(lua_State *L, const char *n, size_t nlen, const char *v, size_t vlen) {
    msg_add_header(&moon_ctx_of(L)->req, n, nlen, v, vlen);
}

void moon_res_reset(lua_State *L, int status) {
    moon_msg *m = &moon_ctx_of(L)->res;
    msg_reset(m);
    m->status = status;
}

void moon_res_add_header(lua_State *L, const char *n, size_t nlen, const char *v, size_t vlen) {
    msg_add_header(&moon_ctx_of(L)->res, n, nlen, v, vlen);
}

// ---- reading helpers -------------------------------------------------------------------------------

static void push_span(lua_State *L, const moon_msg *m, moon_span s) {
    if (s.off == MOON_ABSENT) lua_pushnil(L);
    else lua_pushlstring(L, m->arena.bytes + s.off, s.len);
}

static int span_eq(const moon_msg *m, moon_span s, const char *p, size_t len) {
    return s.len == len && memcmp(m->arena.bytes + s.off, p, len) == 0;
}

// Lower-cases a header name given by a script into `buf` (names are staged lower-case). Returns
// SIZE_MAX for a name longer than `cap`: such a name is compared byte by byte (span_eq_folded).
static size_t fold_name(const char *p, size_t len, char *buf, size_t cap) {
    if (len > cap) return SIZE_MAX;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        buf[i] = (char)(c | (((unsigned)(c - 'A') < 26u) << 5));
    }
    return len;
}

static int span_eq_folded(const moon_msg *m, moon_span s, const char *p, size_t len) {
    if (s.len != len) return 0;
    const unsigned char *q = (const unsigned char *)m->arena.bytes + s.off;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((unsigned char)(c | (((unsigned)(c - 'A') < 26u) << 5)) != q[i]) return 0;
    }
    return 1;
}

// The message behind a request or response view, or a Lua error for anything else. Each state has
// exactly one request and one response view, so a pointer comparison checks the object's kind.
static moon_msg *view_msg(lua_State *L, int idx) {
    moon_ctx *ctx = moon_ctx_of(L);
    const void *p = lua_touserdata(L, idx);
    if (p != NULL && p == ctx->req_ud) return &ctx->req;
    if (p != NULL && p == ctx->res_ud) return &ctx->res;
    luaL_typeerror(L, idx, "request or response object");
    return NULL;
}

// msg:header(name) -> the first value, or nil
static int view_header(lua_State *L) {
    moon_msg *m = view_msg(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    if (!moon_ctx_of(L)->in_call) return 0;
    char buf[MOON_MAX_NAME];
    size_t folded = fold_name(name, len, buf, sizeof buf);
    for (int i = 0; i < m->nheaders; i++) {
        if (folded == SIZE_MAX ? span_eq_folded(m, m->names[i], name, len) : span_eq(m, m->names[i], buf, len)) {
            push_span(L, m, m->values[i]);
            return 1;
        }
    }
    return 0;
}

// Iterator body: upvalue 1 = the message view, 2 = name (or nil for all), 3 = next index.
static int headers_next(lua_State *L) {
    moon_msg *m = view_msg(L, lua_upvalueindex(1));
    if (!moon_ctx_of(L)->in_call) return 0;
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(3));
    size_t len = 0;
    const char *name = lua_tolstring(L, lua_upvalueindex(2), &len);
    for (; i < m->nheaders; i++) {
        if (name == NULL || span_eq(m, m->names[i], name, len)) {
            lua_pushinteger(L, i + 1);
            lua_replace(L, lua_upvalueindex(3));
            push_span(L, m, m->names[i]);
            push_span(L, m, m->values[i]);
            return 2;
        }
    }
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(3));
    return 0;
}

// msg:headers([name]) -> iterator over (name, value), every header or only those named
static int view_headers(lua_State *L) {
    view_msg(L, 1);
    lua_pushvalue(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_pushnil(L);
    } else {
        size_t len;
        const char *name = luaL_checklstring(L, 2, &len);
        char buf[MOON_MAX_NAME];
        if (fold_name(name, len, buf, sizeof buf) == SIZE_MAX) {
            luaL_Buffer b;  // a name longer than any buffer: folded in a Lua buffer
            char *dst = luaL_buffinitsize(L, &b, len);
            for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)name[i];
                dst[i] = (char)(c | (((unsigned)(c - 'A') < 26u) << 5));
            }
            luaL_pushresultsize(&b, len);
        } else {
            lua_pushlstring(L, buf, len);
        }
    }
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, headers_next, 3);
    return 1;
}

static int key_is(const char *k, size_t kl, const char *lit, size_t ll) { return kl == ll && memcmp(k, lit, ll) == 0; }
#define KEY(lit) key_is(k, kl, lit, sizeof(lit) - 1)

static int push_field(lua_State *L, moon_msg *m, int f) {
    push_span(L, m, m->fields[f]);
    return 1;
}

static int request_index(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_msg *m = view_msg(L, 1);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (k == NULL) return 0;
    if (KEY("header")) { lua_pushcfunction(L, view_header); return 1; }
    if (KEY("headers")) { lua_pushcfunction(L, view_headers); return 1; }
    if (!ctx->in_call) return 0;
    switch (kl) {
    case 4:
        if (KEY("host")) return push_field(L, m, MOON_F_HOST);
        if (KEY("path")) return push_field(L, m, MOON_F_PATH);
        if (KEY("form")) return push_field(L, m, MOON_F_FORM);
        if (KEY("port")) {
            if (m->port > 0) lua_pushinteger(L, m->port);
            else lua_pushnil(L);
            return 1;
        }
        break;
    case 5:
        if (KEY("query")) return push_field(L, m, MOON_F_QUERY);
        break;
    case 6:
        if (KEY("method")) return push_field(L, m, MOON_F_METHOD);
        if (KEY("scheme")) return push_field(L, m, MOON_F_SCHEME);
        if (KEY("target")) {
            if (m->fields[MOON_F_TARGET_HOST].off == MOON_ABSENT) return 0;
            lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->target_ref);
            return 1;
        }
        if (KEY("client")) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->client_ref);
            return 1;
        }
        break;
    case 7:
        if (KEY("version")) return push_field(L, m, MOON_F_VERSION);
        if (KEY("upgrade")) return push_field(L, m, MOON_F_UPGRADE);
        break;
    case 8:
        if (KEY("protocol")) return push_field(L, m, MOON_F_PROTOCOL);
        break;
    case 9:
        if (KEY("authority")) return push_field(L, m, MOON_F_AUTHORITY);
        break;
    }
    return 0;
}

static int response_index(lua_State *L) {
    moon_msg *m = view_msg(L, 1);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (k == NULL) return 0;
    if (KEY("header")) { lua_pushcfunction(L, view_header); return 1; }
    if (KEY("headers")) { lua_pushcfunction(L, view_headers); return 1; }
    if (!moon_ctx_of(L)->in_call) return 0;
    if (KEY("status")) {
        lua_pushinteger(L, m->status);
        return 1;
    }
    return 0;
}

static int target_index(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (k == NULL || !ctx->in_call) return 0;
    if (KEY("host")) return push_field(L, &ctx->req, MOON_F_TARGET_HOST);
    if (KEY("port")) {
        lua_pushinteger(L, ctx->req.target_port);
        return 1;
    }
    return 0;
}

static int client_index(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (k == NULL || !ctx->in_call) return 0;
    if (KEY("ip")) return push_field(L, &ctx->req, MOON_F_CLIENT_IP);
    if (KEY("port")) {
        lua_pushinteger(L, ctx->req.client_port);
        return 1;
    }
    if (KEY("tls")) {
        // false for a cleartext client (so `client.tls and ...` reads as before), else the session view.
        if (ctx->req.tls) lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->tls_ref);
        else lua_pushboolean(L, 0);
        return 1;
    }
    return 0;
}

// req.client.tls: the handshake's version, ALPN, SNI and cipher, and a verified client
// certificate's subject, subjectAltNames (a new list per read) and SHA-256 fingerprint.
static int tls_index(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (k == NULL || !ctx->in_call || !ctx->req.tls) return 0;
    moon_msg *m = &ctx->req;
    if (KEY("version")) return push_field(L, m, MOON_F_TLS_VERSION);
    if (KEY("alpn")) return push_field(L, m, MOON_F_TLS_ALPN);
    if (KEY("sni")) return push_field(L, m, MOON_F_TLS_SNI);
    if (KEY("cipher")) return push_field(L, m, MOON_F_TLS_CIPHER);
    if (KEY("subject")) return push_field(L, m, MOON_F_TLS_SUBJECT);
    if (KEY("sha256")) return push_field(L, m, MOON_F_TLS_SHA256);
    if (KEY("sans")) {
        moon_span s = m->fields[MOON_F_TLS_SANS];
        if (s.off == MOON_ABSENT) return 0;
        lua_createtable(L, 4, 0);
        const char *p = m->arena.bytes + s.off, *end = p + s.len;
        lua_Integer n = 0;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl : end;
            lua_pushlstring(L, p, (size_t)(stop - p));
            lua_rawseti(L, -2, ++n);
            p = nl ? nl + 1 : end;
        }
        return 1;
    }
    return 0;
}

static int view_readonly(lua_State *L) { return luaL_error(L, "request and response objects are read-only"); }

static int view_tostring(lua_State *L) {
    lua_pushstring(L, lua_tostring(L, lua_upvalueindex(1)));
    return 1;
}

// ---- header edits ------------------------------------------------------------------------------------

int moon_is_token(const char *p, size_t len) {
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (c && strchr("!#$%&'*+-.^_`|~", c));
        if (!ok) return 0;
    }
    return 1;
}

int moon_value_ok(const char *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
    }
    return 1;
}

int moon_add_edit(lua_State *L, moon_ctx *ctx, int op, const char *n, size_t nlen, const char *v, size_t vlen) {
    if (nlen > MOON_MAX_NAME) return moon_raise(L, MOON_ERR_INVALID, "invalid header name (over %d bytes)", MOON_MAX_NAME);
    if (!moon_is_token(n, nlen)) return moon_raise(L, MOON_ERR_INVALID, "invalid header name '%s'", n);
    if (v && (vlen > MOON_MAX_VALUE || !moon_value_ok(v, vlen))) {
        return moon_raise(L, MOON_ERR_INVALID, "invalid value for header '%s' (control characters, or over %d bytes)", n,
                          MOON_MAX_VALUE);
    }
    if (ctx->nedits >= MOON_MAX_EDITS) {
        return moon_raise(L, MOON_ERR_INVALID, "too many header edits (at most %d per request)", MOON_MAX_EDITS);
    }
    moon_edit *e = &ctx->edits[ctx->nedits];
    e->op = op;
    e->name = moon_arena_put(&ctx->edit_arena, n, nlen, 1);
    e->value = v ? moon_arena_put(&ctx->edit_arena, v, vlen, 0) : (moon_span){ MOON_ABSENT, 0 };
    if (e->name.off == MOON_ABSENT) return luaL_error(L, "out of memory");
    ctx->nedits++;
    return 0;
}

static int edit_op(lua_State *L, int op) {
    moon_ctx *ctx = moon_ctx_of(L);
    const void *self = lua_touserdata(L, 1);
    if (self == NULL || self != ctx->edit_ud) return luaL_typeerror(L, 1, "edit object");
    if (!ctx->in_call) return luaL_error(L, "the edit object is only valid during its hook");
    size_t nlen, vlen = 0;
    const char *n = luaL_checklstring(L, 2, &nlen);
    const char *v = NULL;
    if (op != MOON_EDIT_REMOVE) v = luaL_checklstring(L, 3, &vlen);
    moon_add_edit(L, ctx, op, n, nlen, v, vlen);
    return 0;
}

static int edit_remove(lua_State *L) { return edit_op(L, MOON_EDIT_REMOVE); }
static int edit_set(lua_State *L) { return edit_op(L, MOON_EDIT_SET); }
static int edit_append(lua_State *L) { return edit_op(L, MOON_EDIT_APPEND); }

int moon_edits_count(lua_State *L) { return moon_ctx_of(L)->nedits; }

int moon_edit_at(lua_State *L, int i, const char **name, size_t *nlen, const char **value, size_t *vlen) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_edit *e = &ctx->edits[i];
    *name = ctx->edit_arena.bytes + e->name.off;
    *nlen = e->name.len;
    if (e->value.off == MOON_ABSENT) {
        *value = NULL;
        *vlen = 0;
    } else {
        *value = ctx->edit_arena.bytes + e->value.off;
        *vlen = e->value.len;
    }
    return e->op;
}

void moon_edits_clear(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->nedits = 0;
    moon_arena_reset(&ctx->edit_arena);
}

// ---- installation (inside the protected sandbox set-up) ------------------------------------------

static int make_view(lua_State *L, void *target, lua_CFunction index, const char *name, const void **self) {
    void **ud = lua_newuserdatauv(L, sizeof(void *), 0);
    *ud = target;
    if (self) *self = ud;
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, view_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushstring(L, name);
    lua_pushcclosure(L, view_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void moon_install_views(lua_State *L, moon_ctx *ctx) {
    msg_reset(&ctx->req);
    msg_reset(&ctx->res);
    ctx->req_ref = make_view(L, &ctx->req, request_index, "moongate.request", &ctx->req_ud);
    ctx->res_ref = make_view(L, &ctx->res, response_index, "moongate.response", &ctx->res_ud);
    ctx->target_ref = make_view(L, &ctx->req, target_index, "moongate.target", NULL);
    ctx->client_ref = make_view(L, &ctx->req, client_index, "moongate.client", NULL);
    ctx->tls_ref = make_view(L, &ctx->req, tls_index, "moongate.tls", NULL);

    void **ud = lua_newuserdatauv(L, sizeof(void *), 0);
    *ud = ctx;
    ctx->edit_ud = ud;
    luaL_newmetatable(L, "moongate.edit");
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, edit_remove);
    lua_setfield(L, -2, "remove");
    lua_pushcfunction(L, edit_set);
    lua_setfield(L, -2, "set");
    lua_pushcfunction(L, edit_append);
    lua_setfield(L, -2, "append");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, view_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    ctx->edit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
