// The sandbox's `insert`, `remove`, `move`, `concat` and `sort` of the table library: the same
// behaviour as Lua 5.4's, but every loop polls the hook deadline, so neither a huge length (a `__len`
// metamethod can claim 2^62 elements) nor a long sort can hold the event loop.
#include <limits.h>
#include "internal.h"

// Elements handled between two deadline polls.
#define POLL_EVERY 4096

static void poll_every(lua_State *L, lua_Integer done) {
    if ((done & (POLL_EVERY - 1)) == 0) moon_deadline_poll(L);
}

// The length of the table argument 1, as `#t` (metamethods respected). Anything that is not a table
// and has no `__index`/`__newindex`/`__len` is refused, as the stock library does.
static lua_Integer table_length(lua_State *L) {
    if (lua_type(L, 1) != LUA_TTABLE) {
        int ok = lua_getmetatable(L, 1);
        if (ok) {
            ok = lua_getfield(L, -1, "__index") != LUA_TNIL && lua_getfield(L, -2, "__newindex") != LUA_TNIL &&
                 lua_getfield(L, -3, "__len") != LUA_TNIL;
            lua_settop(L, lua_gettop(L) - (ok ? 4 : 1));
        }
        if (!ok) luaL_typeerror(L, 1, "table");
    }
    return luaL_len(L, 1);
}

// table.insert(t, [pos,] value)
static int tb_insert(lua_State *L) {
    lua_Integer last = table_length(L) + 1;  // the first free slot
    lua_Integer pos = last;
    switch (lua_gettop(L)) {
    case 2:
        break;
    case 3: {
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)last, 2, "position out of bounds");
        lua_Integer moved = 0;
        for (lua_Integer i = last; i > pos; i--) {  // open a gap at pos
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
            poll_every(L, ++moved);
        }
        break;
    }
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);  // the value is on top
    return 0;
}

// table.remove(t [, pos]) -> the removed value
static int tb_remove(lua_State *L) {
    lua_Integer size = table_length(L);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size) luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
    lua_geti(L, 1, pos);
    lua_Integer moved = 0;
    for (lua_Integer i = pos; i < size; i++) {  // close the gap
        lua_geti(L, 1, i + 1);
        lua_seti(L, 1, i);
        poll_every(L, ++moved);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos < size ? size : pos);
    return 1;
}

// table.move(a1, f, e, t [, a2]) -> a2
static int tb_move(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int dest = lua_isnoneornil(L, 5) ? 1 : 5;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, dest, LUA_TTABLE);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f;  // elements to move, minus one
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n, 4, "destination wrap around");
        int forward = t > e || t <= f || (dest != 1 && !lua_compare(L, 1, dest, LUA_OPEQ));
        for (lua_Integer k = 0; k <= n; k++) {
            lua_Integer i = forward ? k : n - k;
            lua_geti(L, 1, f + i);
            lua_seti(L, dest, t + i);
            poll_every(L, k + 1);
        }
    }
    lua_pushvalue(L, dest);
    return 1;
}

// table.concat(t [, sep [, i [, j]]])
static int tb_concat(lua_State *L) {
    lua_Integer last = table_length(L);
    size_t seplen;
    const char *sep = luaL_optlstring(L, 2, "", &seplen);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer done = 0;
    for (; i <= last; i++) {
        lua_geti(L, 1, i);
        if (!lua_isstring(L, -1)) {
            return luaL_error(L, "invalid value (at index %I) in table for 'concat'", (LUAI_UACINT)i);
        }
        luaL_addvalue(&b);
        if (i != last) luaL_addlstring(&b, sep, seplen);
        poll_every(L, ++done);
        if (i == LUA_MAXINTEGER) break;
    }
    luaL_pushresult(&b);
    return 1;
}

// ---- sort: a heap sort over t[1..n] (O(n log n) whatever the input, no recursion) -----------------

typedef struct sorter { lua_State *L; int has_comp; lua_Integer compared; } sorter;

// t[a] < t[b], by the comparator when there is one.
static int less(sorter *s, lua_Integer a, lua_Integer b) {
    lua_State *L = s->L;
    poll_every(L, ++s->compared);
    if (s->has_comp) {
        lua_pushvalue(L, 2);
        lua_geti(L, 1, a);
        lua_geti(L, 1, b);
        lua_call(L, 2, 1);
    } else {
        lua_geti(L, 1, a);
        lua_geti(L, 1, b);
        lua_pushboolean(L, lua_compare(L, -2, -1, LUA_OPLT));
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    int r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

static void swap(lua_State *L, lua_Integer a, lua_Integer b) {
    lua_geti(L, 1, a);
    lua_geti(L, 1, b);
    lua_seti(L, 1, a);
    lua_seti(L, 1, b);
}

// Moves t[root] down the max-heap over t[1..n].
static void sift_down(sorter *s, lua_Integer root, lua_Integer n) {
    for (;;) {
        lua_Integer child = 2 * root;
        if (child > n) return;
        if (child < n && less(s, child, child + 1)) child++;
        if (!less(s, root, child)) return;
        swap(s->L, root, child);
        root = child;
    }
}

// table.sort(t [, comp])
static int tb_sort(lua_State *L) {
    lua_Integer n = table_length(L);
    if (n <= 1) return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    sorter s = { L, !lua_isnil(L, 2), 0 };
    for (lua_Integer root = n / 2; root >= 1; root--) sift_down(&s, root, n);
    for (lua_Integer end = n; end > 1; end--) {
        swap(L, 1, end);
        sift_down(&s, 1, end - 1);
    }
    return 0;
}

void moon_install_table_functions(lua_State *L, int table_lib) {
    static const luaL_Reg functions[] = {
        { "insert", tb_insert }, { "remove", tb_remove }, { "move", tb_move },
        { "concat", tb_concat }, { "sort", tb_sort }, { NULL, NULL },
    };
    lua_pushvalue(L, table_lib);
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
