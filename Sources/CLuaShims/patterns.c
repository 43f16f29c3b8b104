// Lua 5.4 string patterns for the sandbox: string.find, string.match, string.gmatch, string.gsub.
//
// Written from the Lua 5.4 reference manual (§6.4 and §6.4.1). The stock functions backtrack in C,
// out of reach of the instruction hook, so ".-.-.-b" on a few kilobytes of "a" holds the event
// loop for hours. This matcher gives the same answers (checked against Debian's liblua5.4 5.4.4,
// including the undocumented %z class, the recursion limit and which inputs raise), and also:
//   - counts its steps (one per single-character test, one per nested attempt, one per byte a
//     back-reference or %b compares, one per PM_TEXT_BYTES_PER_STEP bytes of plain-text search or
//     replacement text) and polls the call's deadline every PM_POLL_EVERY steps;
//   - limits its recursion to PM_MAX_DEPTH nested attempts ("pattern too complex");
//   - never allocates: its state is a fixed struct on the C stack and results go to the Lua stack or
//     a luaL_Buffer (memory owned by Lua), so a deadline error unwinding through it leaks nothing;
//   - searches plain text (find's `plain`, or a pattern with no special byte) with memmem.
// A fault in a pattern is reported when the matcher reaches it, as the stock library does: "x[" on a
// subject with no "x" quietly finds nothing.
#include <ctype.h>
#include <string.h>
#include "patterns.h"

// ---- the library functions --------------------------------------------------------------------

/// string.find (s, pattern [, init [, plain]]) and string.match (s, pattern [, init]).
static int pm_find_or_match(lua_State *L, int is_find) {
    size_t len, plen;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checklstring(L, 2, &plen);
    size_t init = pm_start(luaL_optinteger(L, 3, 1), len);
    if (init > len) {
        luaL_pushfail(L);
        return 1;
    }
    pm_state ms;
    pm_init(&ms, L, s, len, p, plen);
    int plain = is_find ? lua_toboolean(L, 4) || pm_is_plain(&ms, p, plen, 1)
                        : plen > 0 && pm_is_plain(&ms, p, plen, 0);
    if (plain) {
        const char *at = pm_find_text(&ms, s + init, len - init, p, plen);
        if (at == NULL) {
            luaL_pushfail(L);
            return 1;
        }
        size_t off = (size_t)(at - s);
        if (!is_find) {
            lua_pushlstring(L, at, plen);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)off + 1);
        lua_pushinteger(L, (lua_Integer)(off + plen));
        return 2;
    }
    size_t p0 = 0;
    int anchored = plen > 0 && p[0] == '^';
    if (anchored) p0 = 1;
    for (size_t at = init;; at++) {
        pm_restart(&ms);
        ptrdiff_t e = pm_match(&ms, at, p0);
        if (e != PM_FAIL) {
            if (!is_find) return pm_push_captures(&ms, at, (size_t)e, 1);
            lua_pushinteger(L, (lua_Integer)at + 1);
            lua_pushinteger(L, (lua_Integer)e);
            return 2 + pm_push_captures(&ms, at, (size_t)e, 0);
        }
        if (anchored || at >= len) break;
    }
    luaL_pushfail(L);
    return 1;
}

static int pm_lua_find(lua_State *L) { return pm_find_or_match(L, 1); }
static int pm_lua_match(lua_State *L) { return pm_find_or_match(L, 0); }

// gmatch's iterator keeps its state in upvalues: the subject, the pattern, the offset where the next
// search starts, the offset where the last match ended (-1 before the first) and the steps left
// before the next deadline poll. A '^' in a gmatch pattern is an ordinary byte, as in stock 5.4.
enum { PM_UV_SUBJ = 1, PM_UV_PAT, PM_UV_NEXT, PM_UV_LAST, PM_UV_TICKS };

static void pm_set_upvalue(lua_State *L, int uv, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_replace(L, lua_upvalueindex(uv));
}

static int pm_gmatch_step(lua_State *L) {
    size_t len, plen;
    const char *s = lua_tolstring(L, lua_upvalueindex(PM_UV_SUBJ), &len);
    const char *p = lua_tolstring(L, lua_upvalueindex(PM_UV_PAT), &plen);
    size_t at = (size_t)lua_tointeger(L, lua_upvalueindex(PM_UV_NEXT));
    lua_Integer last = lua_tointeger(L, lua_upvalueindex(PM_UV_LAST));
    if (at > len) return 0;
    pm_state ms;
    pm_init(&ms, L, s, len, p, plen);
    ms.ticks = lua_tointeger(L, lua_upvalueindex(PM_UV_TICKS));
    if (plen > 0 && pm_is_plain(&ms, p, plen, 0)) {
        // Plain text never matches empty, so a match can never end where the last one did.
        const char *hit = pm_find_text(&ms, s + at, len - at, p, plen);
        pm_set_upvalue(L, PM_UV_TICKS, ms.ticks);
        if (hit == NULL) {
            pm_set_upvalue(L, PM_UV_NEXT, (lua_Integer)len + 1);
            return 0;
        }
        size_t e = (size_t)(hit - s) + plen;
        pm_set_upvalue(L, PM_UV_NEXT, (lua_Integer)e);
        pm_set_upvalue(L, PM_UV_LAST, (lua_Integer)e);
        lua_pushlstring(L, hit, plen);
        return 1;
    }
    for (; at <= len; at++) {
        pm_restart(&ms);
        ptrdiff_t e = pm_match(&ms, at, 0);
        // An empty match where the previous match ended is skipped.
        if (e != PM_FAIL && (lua_Integer)e != last) {
            pm_set_upvalue(L, PM_UV_NEXT, (lua_Integer)e);
            pm_set_upvalue(L, PM_UV_LAST, (lua_Integer)e);
            pm_set_upvalue(L, PM_UV_TICKS, ms.ticks);
            return pm_push_captures(&ms, at, (size_t)e, 1);
        }
    }
    pm_set_upvalue(L, PM_UV_NEXT, (lua_Integer)len + 1);
    pm_set_upvalue(L, PM_UV_TICKS, ms.ticks);
    return 0;
}

/// string.gmatch (s, pattern [, init])
static int pm_lua_gmatch(lua_State *L) {
    size_t len;
    luaL_checklstring(L, 1, &len);
    luaL_checkstring(L, 2);
    size_t init = pm_start(luaL_optinteger(L, 3, 1), len);
    if (init > len) init = len + 1;
    lua_settop(L, 2);  // the subject and pattern, as strings, become upvalues
    lua_pushinteger(L, (lua_Integer)init);
    lua_pushinteger(L, -1);
    lua_pushinteger(L, PM_POLL_EVERY);
    lua_pushcclosure(L, pm_gmatch_step, PM_UV_TICKS);
    return 1;
}

/// Appends a replacement string for the match [s, e): "%0" is the match, "%1".."%9" a capture (a
/// position capture as its number), "%%" a percent sign; any other '%' is an error.
static void pm_add_template(pm_state *ms, luaL_Buffer *b, const char *t, size_t tlen, size_t s, size_t e) {
    pm_tick(ms, 1 + (lua_Integer)(tlen / PM_TEXT_BYTES_PER_STEP));
    size_t i = 0;
    for (;;) {
        const char *pct = memchr(t + i, '%', tlen - i);
        if (pct == NULL) break;
        size_t k = (size_t)(pct - t);
        luaL_addlstring(b, t + i, k - i);
        unsigned char d = k + 1 < tlen ? (unsigned char)t[k + 1] : 0;
        if (d == '%') {
            luaL_addchar(b, '%');
        } else if (d == '0') {
            luaL_addlstring(b, (const char *)ms->subj + s, e - s);
        } else if (d >= '1' && d <= '9') {
            size_t start;
            ptrdiff_t len = pm_capture_of(ms, d - '1', s, e, &start);
            if (len == PM_POSITION) {
                lua_pushinteger(ms->L, (lua_Integer)start + 1);
                luaL_addvalue(b);
            } else {
                luaL_addlstring(b, (const char *)ms->subj + start, (size_t)len);
            }
        } else {
            luaL_error(ms->L, "invalid use of '%%' in replacement string (use '%%%%' for a percent sign)");
        }
        i = k + 2;
    }
    luaL_addlstring(b, t + i, tlen - i);
}

/// Appends the replacement for the match [s, e) as gsub's third argument (at stack index 3) says.
static void pm_add_replacement(pm_state *ms, luaL_Buffer *b, int kind, const char *t, size_t tlen, size_t s,
                               size_t e) {
    lua_State *L = ms->L;
    if (kind == LUA_TSTRING || kind == LUA_TNUMBER) {
        pm_add_template(ms, b, t, tlen, s, e);
        return;
    }
    if (kind == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = pm_push_captures(ms, s, e, 1);
        lua_call(L, n, 1);
    } else {
        pm_push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) {  // false or nil: keep the original text
        lua_pop(L, 1);
        luaL_addlstring(b, (const char *)ms->subj + s, e - s);
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

/// string.gsub (s, pattern, repl [, n])
static int pm_lua_gsub(lua_State *L) {
    size_t len, plen, tlen = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checklstring(L, 2, &plen);
    int kind = lua_type(L, 3);
    lua_Integer limit = luaL_optinteger(L, 4, (lua_Integer)len + 1);
    luaL_argexpected(L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE,
                     3, "string/function/table");
    const char *t = NULL;
    if (kind == LUA_TSTRING || kind == LUA_TNUMBER) t = lua_tolstring(L, 3, &tlen);
    lua_settop(L, 3);
    pm_state ms;
    pm_init(&ms, L, s, len, p, plen);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer count = 0;
    size_t at = 0;  // the subject up to `at` is in the buffer
    if (plen > 0 && pm_is_plain(&ms, p, plen, 0)) {
        while (count < limit) {
            const char *hit = pm_find_text(&ms, s + at, len - at, p, plen);
            if (hit == NULL) break;
            size_t from = (size_t)(hit - s);
            luaL_addlstring(&b, s + at, from - at);
            count++;
            pm_add_replacement(&ms, &b, kind, t, tlen, from, from + plen);
            at = from + plen;
        }
    } else {
        int anchored = plen > 0 && p[0] == '^';
        size_t p0 = anchored ? 1 : 0;
        ptrdiff_t last = PM_FAIL;  // where the last match ended: an empty match there is skipped
        while (count < limit) {
            pm_restart(&ms);
            ptrdiff_t e = pm_match(&ms, at, p0);
            if (e != PM_FAIL && e != last) {
                count++;
                pm_add_replacement(&ms, &b, kind, t, tlen, at, (size_t)e);
                at = (size_t)e;
                last = e;
            } else if (at < len) {
                luaL_addchar(&b, s[at]);
                at++;
            } else {
                break;
            }
            if (anchored) break;
        }
    }
    luaL_addlstring(&b, s + at, len - at);
    luaL_pushresult(&b);
    lua_pushinteger(L, count);
    return 2;
}

void moon_install_patterns(lua_State *L, int string_table) {
    static const luaL_Reg functions[] = {
        { "find", pm_lua_find }, { "match", pm_lua_match }, { "gmatch", pm_lua_gmatch }, { "gsub", pm_lua_gsub },
        { NULL, NULL },
    };
    lua_pushvalue(L, string_table);
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
