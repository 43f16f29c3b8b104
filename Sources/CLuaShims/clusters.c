// The configured clusters: `moongate.clusters()`, and the verbs that name a cluster (`route`,
// `tunnel_via`) checked against them, so a misspelt name is a fault at the line that wrote it.
#include <stdlib.h>
#include <string.h>
#include "internal.h"

// At most this many names are listed in an "unknown cluster" message.
#define LISTED_NAMES 16
// A name from a script is quoted up to this many bytes.
#define QUOTED_NAME 64

void moon_set_clusters(lua_State *L, const char *names, size_t len, int n) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_free_clusters(ctx);
    if (n <= 0 || names == NULL || len == 0) return;
    char *bytes = malloc(len);
    moon_span *spans = calloc((size_t)n, sizeof *spans);
    if (bytes == NULL || spans == NULL) {  // no memory: the list stays unknown
        free(bytes);
        free(spans);
        return;
    }
    memcpy(bytes, names, len);
    int found = 0;
    size_t start = 0;
    for (size_t i = 0; i < len && found < n; i++) {
        if (bytes[i] != 0) continue;
        spans[found].off = (uint32_t)start;
        spans[found].len = (uint32_t)(i - start);
        found++;
        start = i + 1;
    }
    ctx->cluster_bytes = bytes;
    ctx->clusters = spans;
    ctx->nclusters = found;
}

void moon_free_clusters(moon_ctx *ctx) {
    free(ctx->cluster_bytes);
    free(ctx->clusters);
    ctx->cluster_bytes = NULL;
    ctx->clusters = NULL;
    ctx->nclusters = 0;
}

int moon_cluster_ok(moon_ctx *ctx, const char *name, size_t len) {
    if (ctx->nclusters == 0) return 1;
    for (int i = 0; i < ctx->nclusters; i++) {
        moon_span s = ctx->clusters[i];
        if (s.len == len && memcmp(ctx->cluster_bytes + s.off, name, len) == 0) return 1;
    }
    return 0;
}

// Pushes "a, b, c" (the first LISTED_NAMES names).
static void push_names(lua_State *L, moon_ctx *ctx) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < ctx->nclusters && i < LISTED_NAMES; i++) {
        if (i > 0) luaL_addstring(&b, ", ");
        luaL_addlstring(&b, ctx->cluster_bytes + ctx->clusters[i].off, ctx->clusters[i].len);
    }
    if (ctx->nclusters > LISTED_NAMES) luaL_addstring(&b, ", ...");
    luaL_pushresult(&b);
}

// moongate.route(cluster) and moongate.tunnel_via(cluster): upvalue 1 is the interned verb. With a
// known cluster list, anything but one of its names is a fault here, at the script's line.
static int cluster_verb(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->nclusters > 0) {
        const char *verb = lua_tostring(L, lua_upvalueindex(1));
        if (lua_type(L, 1) != LUA_TSTRING) {
            push_names(L, ctx);
            return moon_raise(L, MOON_ERR_RUNTIME, "moongate.%s: the cluster name must be a string, not a %s value (clusters: %s)",
                              verb, luaL_typename(L, 1), lua_tostring(L, -1));
        }
        size_t len;
        const char *name = lua_tolstring(L, 1, &len);
        if (!moon_cluster_ok(ctx, name, len)) {
            char quoted[QUOTED_NAME + 4];
            size_t n = len < QUOTED_NAME ? len : QUOTED_NAME;
            memcpy(quoted, name, n);
            memcpy(quoted + n, len > QUOTED_NAME ? "..." : "", len > QUOTED_NAME ? 4 : 1);
            for (size_t i = 0; i < n; i++) {
                if ((unsigned char)quoted[i] < 0x20 || quoted[i] == 0x7f) quoted[i] = '?';
            }
            push_names(L, ctx);
            return moon_raise(L, MOON_ERR_RUNTIME, "moongate.%s: unknown cluster '%s' (clusters: %s)", verb, quoted,
                              lua_tostring(L, -1));
        }
    }
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    return n + 1;
}

// moongate.clusters() -> a new list of the configured cluster names (empty when unknown)
static int clusters_list(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    lua_createtable(L, ctx->nclusters, 0);
    for (int i = 0; i < ctx->nclusters; i++) {
        lua_pushlstring(L, ctx->cluster_bytes + ctx->clusters[i].off, ctx->clusters[i].len);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

void moon_install_clusters(lua_State *L, int mg) {
    static const char *const verbs[] = { "route", "tunnel_via", NULL };
    for (const char *const *v = verbs; *v; v++) {
        lua_pushstring(L, *v);
        lua_pushcclosure(L, cluster_verb, 1);
        lua_setfield(L, mg, *v);
    }
    lua_pushcfunction(L, clusters_list);
    lua_setfield(L, mg, "clusters");
}
