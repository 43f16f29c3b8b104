// The host module's text helpers: base64 both ways, and pattern-free prefix and suffix tests.
#include <string.h>
#include "internal.h"

// ---- base64 --------------------------------------------------------------------------------------------

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int moon_base64_encode(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < len ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < len ? s[i + 2] : 0);
        luaL_addchar(&b, B64[(v >> 18) & 63]);
        luaL_addchar(&b, B64[(v >> 12) & 63]);
        luaL_addchar(&b, i + 1 < len ? B64[(v >> 6) & 63] : '=');
        luaL_addchar(&b, i + 2 < len ? B64[v & 63] : '=');
    }
    luaL_pushresult(&b);
    return 1;
}

static int b64_index(unsigned char c) {
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

// base64_decode(s) -> the bytes, or nil when s is not valid base64
int moon_base64_decode(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    if (len % 4 != 0) {
        lua_pushnil(L);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i += 4) {
        int c[4];
        for (int j = 0; j < 4; j++) {
            c[j] = s[i + j] == '=' && i + 4 == len && j >= 2 ? -2 : b64_index(s[i + j]);
            if (c[j] == -1) {
                lua_pushnil(L);
                return 1;
            }
        }
        if (c[0] < 0 || c[1] < 0 || (c[2] == -2 && c[3] != -2)) {
            lua_pushnil(L);
            return 1;
        }
        unsigned v = (unsigned)c[0] << 18 | (unsigned)c[1] << 12 | (unsigned)(c[2] < 0 ? 0 : c[2]) << 6 |
                     (unsigned)(c[3] < 0 ? 0 : c[3]);
        luaL_addchar(&b, (char)(v >> 16));
        if (c[2] >= 0) luaL_addchar(&b, (char)((v >> 8) & 0xff));
        if (c[3] >= 0) luaL_addchar(&b, (char)(v & 0xff));
    }
    luaL_pushresult(&b);
    return 1;
}

// starts_with(s, prefix), ends_with(s, suffix), find_plain(s, needle): pattern-free helpers (C
// patterns cannot be interrupted by the budget, so scripts should prefer these on request data).
int moon_starts_with(lua_State *L) {
    size_t l, pl;
    const char *s = luaL_checklstring(L, 1, &l);
    const char *p = luaL_checklstring(L, 2, &pl);
    lua_pushboolean(L, l >= pl && memcmp(s, p, pl) == 0);
    return 1;
}

int moon_ends_with(lua_State *L) {
    size_t l, pl;
    const char *s = luaL_checklstring(L, 1, &l);
    const char *p = luaL_checklstring(L, 2, &pl);
    lua_pushboolean(L, l >= pl && memcmp(s + l - pl, p, pl) == 0);
    return 1;
}
