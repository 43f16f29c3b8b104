// Lua values as JSON text (plugin tests tables, metadata), for Swift to read.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

// ---- export as JSON (tests tables, plugin metadata) -------------------------------------------------
// The text is built in a malloc'd arena, not a luaL_Buffer, so the walk may use the stack freely.

static void put(lua_State *L, moon_arena *b, const char *p, size_t len) {
    if (len == 0) return;
    moon_span s = moon_arena_put(b, p, len, 0);
    if (s.off == MOON_ABSENT) luaL_error(L, "out of memory while exporting");
}

static void put_str(lua_State *L, moon_arena *b, const char *p) { put(L, b, p, strlen(p)); }

static void json_string(lua_State *L, moon_arena *b, const char *s, size_t len) {
    put(L, b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f) {
            put(L, b, s + run, i - run);
            char esc[8];
            if (c == '"' || c == '\\') snprintf(esc, sizeof esc, "\\%c", c);
            else snprintf(esc, sizeof esc, "\\u%04x", c);
            put_str(L, b, esc);
            run = i + 1;
        }
    }
    put(L, b, s + run, len - run);
    put(L, b, "\"", 1);
}

static void json_value(lua_State *L, moon_arena *b, int idx, int depth) {
    if (depth > 16) luaL_error(L, "value nested too deeply to export");
    luaL_checkstack(L, 4, "export");
    switch (lua_type(L, idx)) {
    case LUA_TNIL: put_str(L, b, "null"); break;
    case LUA_TBOOLEAN: put_str(L, b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: {
        char num[64];
        if (lua_isinteger(L, idx)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, idx));
        put_str(L, b, num);
        break;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_string(L, b, s, len);
        break;
    }
    case LUA_TTABLE: {
        lua_Unsigned n = lua_rawlen(L, idx);
        int is_array = n > 0;
        if (is_array) {
            lua_pushnil(L);
            while (lua_next(L, idx) != 0) {
                lua_pop(L, 1);
                if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || (lua_Unsigned)lua_tointeger(L, -1) > n) {
                    is_array = 0;
                    lua_pop(L, 1);
                    break;
                }
            }
        }
        if (is_array) {
            put(L, b, "[", 1);
            for (lua_Unsigned i = 1; i <= n; i++) {
                if (i > 1) put(L, b, ",", 1);
                lua_rawgeti(L, idx, (lua_Integer)i);
                json_value(L, b, lua_gettop(L), depth + 1);
                lua_pop(L, 1);
            }
            put(L, b, "]", 1);
        } else {
            put(L, b, "{", 1);
            int first = 1;
            lua_pushnil(L);
            while (lua_next(L, idx) != 0) {
                int kt = lua_type(L, -2);
                if (kt == LUA_TSTRING || kt == LUA_TNUMBER) {
                    if (!first) put(L, b, ",", 1);
                    first = 0;
                    size_t kl;
                    lua_pushvalue(L, -2);
                    const char *k = lua_tolstring(L, -1, &kl);
                    json_string(L, b, k, kl);
                    lua_pop(L, 1);
                    put(L, b, ":", 1);
                    json_value(L, b, lua_gettop(L), depth + 1);
                }
                lua_pop(L, 1);
            }
            put(L, b, "}", 1);
        }
        break;
    }
    case LUA_TFUNCTION: put_str(L, b, "\"<function>\""); break;
    default: luaL_error(L, "cannot export a %s value", luaL_typename(L, idx));
    }
}

typedef struct export_args { int ref; moon_arena *buf; } export_args;

static int export_json(lua_State *L) {
    export_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
    json_value(L, a->buf, lua_gettop(L), 0);
    put(L, a->buf, "", 0);
    return 0;
}

int moon_export_json(lua_State *L, int ref, char **out, size_t *out_len) {
    moon_arena buf = { NULL, 0, 0 };
    export_args a = { ref, &buf };
    int status = moon_pcall(L, export_json, &a, 0);
    if (status != MOON_OK) {
        free(buf.bytes);
        *out = NULL;
        *out_len = 0;
        return status;
    }
    *out = buf.bytes;
    *out_len = buf.used;
    return MOON_OK;
}
