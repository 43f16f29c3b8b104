// The sandbox: which globals a script sees, read-only libraries, text-only loading, frozen
// environments, and the loading entry points Swift calls.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

// ---- sandboxed replacements of base functions ---------------------------------------------------

// setmetatable that refuses __gc: finalizers run with hooks off and would escape the budget.
static int sb_setmetatable(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL) {
        return luaL_error(L, "setmetatable: __gc metamethods are not allowed in policy scripts");
    }
    lua_settop(L, 2);
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) {
        return luaL_error(L, "cannot change a protected metatable");
    }
    lua_setmetatable(L, 1);
    return 1;
}

// xpcall(f, handler, ...): Lua runs a message handler before it unwinds, and when the error came
// from the instruction hook (the budget or the deadline) hooks are still off then, so a handler could
// loop for ever. Here the handler runs after the unwinding, as an ordinary call under the budget and
// the deadline. Scripts have no debug library, so nothing else tells the two apart.
static int sb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    for (int i = 3; i <= n; i++) lua_pushvalue(L, i);
    int base = n;
    if (lua_pcall(L, n - 2 < 0 ? 0 : n - 2, LUA_MULTRET, 0) == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_insert(L, base + 1);
        return lua_gettop(L) - base;
    }
    lua_pushvalue(L, 2);  // handler(error)
    lua_insert(L, -2);
    lua_pcall(L, 1, 1, 0);  // an error in the handler is the result, as "error in error handling" would be
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

// collectgarbage("count") only.
static int sb_collectgarbage(lua_State *L) {
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") != 0) {
        return luaL_error(L, "collectgarbage: only \"count\" is allowed in policy scripts");
    }
    int k = lua_gc(L, LUA_GCCOUNT, 0);
    int b = lua_gc(L, LUA_GCCOUNTB, 0);
    lua_pushnumber(L, (lua_Number)k + ((lua_Number)b / 1024));
    return 1;
}

// load(text [, chunkname [, mode [, env]]]): text only, never bytecode; the default environment is
// the calling plugin's own (upvalue 1), never the real globals.
static int sb_load(lua_State *L) {
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    if (s == NULL) return luaL_error(L, "load: only strings can be loaded in policy scripts");
    if (len > MOON_MAX_LOAD) return luaL_error(L, "load: source of %d bytes is over the limit of %d", (int)len, MOON_MAX_LOAD);
    moon_deadline_poll(L);  // the parser runs in C: at most MOON_MAX_LOAD bytes of it per call
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strcmp(mode, "t") != 0 && len > 0 && s[0] == LUA_SIGNATURE[0]) {
        lua_pushnil(L);
        lua_pushliteral(L, "attempt to load a binary chunk (mode is 't')");
        return 2;
    }
    int status = luaL_loadbufferx(L, s, len, name, "t");
    if (status != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnone(L, 4)) lua_pushvalue(L, 4);
    else lua_pushvalue(L, lua_upvalueindex(1));
    lua_setupvalue(L, -2, 1);
    return 1;
}

// A library function whose work grows with its input (string and utf8 functions, tostring,
// tonumber) runs behind this guard: on an input of more than 16 KiB it polls the deadline first, so a
// loop of such calls cannot outrun the deadline between two instruction-hook polls. Upvalue 1 is the
// stock function; it is called in this frame (the stock functions use no upvalues of their own).
#define GUARD_BYTES (16 * 1024)

static int sb_guarded(lua_State *L) {
    size_t bytes = 0;
    for (int i = lua_gettop(L); i >= 1; i--) {
        if (lua_type(L, i) == LUA_TSTRING) bytes += lua_rawlen(L, i);
    }
    if (bytes > GUARD_BYTES) moon_deadline_poll(L);
    lua_CFunction stock = lua_tocfunction(L, lua_upvalueindex(1));
    return stock(L);
}

// Replaces every C function in the table at `idx` by its guarded form.
static void guard_functions(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_tocfunction(L, -1) != NULL) {
            lua_pushcclosure(L, sb_guarded, 1);  // the stock function is its upvalue
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, idx);
        } else {
            lua_pop(L, 1);
        }
    }
}

static int sb_readonly(lua_State *L) {
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "attempt to set '%s': this table is read-only", key);
}

static int sb_frozen_env(lua_State *L) {
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L,
                      "attempt to set global '%s': a plugin's globals are read-only after it has loaded "
                      "(keep state in locals)",
                      key);
}

// Pushes a read-only proxy of the table at `idx`: reads go to it, writes raise.
static void push_readonly_proxy(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sb_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

// Copies library `name` from the real globals without the names in `drop` into a new table, which
// is left on the stack so the caller can replace functions in it, and stores a read-only proxy of it
// in the template.
static void add_library(lua_State *L, int template, const char *name, const char *const *drop) {
    lua_getglobal(L, name);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) {
        int skip = 0;
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            for (const char *const *d = drop; d && *d; d++) skip |= strcmp(*d, k) == 0;
        }
        if (skip) {
            lua_pop(L, 1);
        } else {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    push_readonly_proxy(L, -1);
    lua_setfield(L, template, name);
    lua_remove(L, -2);
}

// string.rep(s, n [, sep]): the result's size is checked before anything is allocated (it must fit
// the sandbox's string limit), then built by doubling: a few memcpy calls, not one per repetition.
static int sb_string_rep(lua_State *L) {
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l == 0 && lsep == 0)) {
        lua_pushliteral(L, "");
        return 1;
    }
    if ((double)l * (double)n + (double)lsep * (double)(n - 1) > (double)MOON_MAX_STRING) {
        return moon_raise(L, MOON_ERR_MEMORY, "string.rep: the result would be over the sandbox's string limit of %d bytes",
                          (int)MOON_MAX_STRING);
    }
    size_t total = l * (size_t)n + lsep * (size_t)(n - 1);
    size_t period = l + lsep;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, total);
    memcpy(p, s, l);
    if (n > 1) memcpy(p + l, sep, lsep);
    // The result is the period "s..sep" repeated, cut to `total`: copy the filled prefix onto the rest.
    size_t filled = n > 1 ? period : l;
    while (filled < total) {
        size_t chunk = total - filled < filled ? total - filled : filled;
        memcpy(p + filled, p, chunk);
        filled += chunk;
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

static const char *const BASE_ALLOWED[] = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawlen", "rawget",
    "select", "tonumber", "tostring", "type", "getmetatable", "_VERSION", NULL,
};

static int open_sandbox(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(L, 0);

    // Protect the string metatable: getmetatable("") answers false, so it cannot be poisoned.
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_settop(L, 0);

    lua_newtable(L);  // 1: the template
    int template = 1;
    for (const char *const *n = BASE_ALLOWED; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, template, *n);
    }
    lua_pushcfunction(L, sb_setmetatable);
    lua_setfield(L, template, "setmetatable");
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setfield(L, template, "collectgarbage");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, template, "xpcall");

    static const char *const string_drop[] = { "dump", NULL };
    add_library(L, template, LUA_STRLIBNAME, string_drop);
    guard_functions(L, -1);
    lua_pushcfunction(L, sb_string_rep);
    lua_setfield(L, -2, "rep");
    moon_install_patterns(L, lua_gettop(L));
    lua_pop(L, 1);
    // Strings index the same filtered library: ("").dump is as absent as string.dump.
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_getfield(L, template, LUA_STRLIBNAME);
    lua_setfield(L, -2, "__index");
    lua_settop(L, template);
    add_library(L, template, LUA_TABLIBNAME, NULL);
    moon_install_table_functions(L, lua_gettop(L));
    lua_pop(L, 1);
    add_library(L, template, LUA_MATHLIBNAME, NULL);
    lua_pop(L, 1);
    add_library(L, template, LUA_UTF8LIBNAME, NULL);
    guard_functions(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, template, LUA_TABLIBNAME);
    lua_getfield(L, -1, "unpack");
    lua_setfield(L, template, "unpack");
    lua_pop(L, 1);
    for (const char *const *n = (const char *const[]){ "tostring", "tonumber", NULL }; *n; n++) {
        lua_getfield(L, template, *n);
        lua_pushcclosure(L, sb_guarded, 1);
        lua_setfield(L, template, *n);
    }

    // The host module: verbs, matchers, helpers.
    lua_newtable(L);
    int mg = lua_gettop(L);
    moon_install_matchers(L, mg);
    moon_install_regex(L, mg);
    moon_install_clusters(L, mg);
    moon_install_htpasswd(L, mg);
    moon_install_log(L, mg, template);
    push_readonly_proxy(L, mg);
    lua_setfield(L, template, "moongate");
    lua_settop(L, template);

    moon_install_views(L, ctx);
    lua_settop(L, template);
    ctx->template_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int moon_open_sandbox(lua_State *L) { return moon_pcall(L, open_sandbox, NULL, 0); }

// ---- environments -----------------------------------------------------------------------------------

static int new_env(lua_State *L) {
    int *out = lua_touserdata(L, 1);
    moon_ctx *ctx = moon_ctx_of(L);
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->template_ref);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sb_load, 1);
    lua_setfield(L, env, "load");
    lua_settop(L, env);
    *out = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int moon_new_env(lua_State *L, int *env_ref) { return moon_pcall(L, new_env, env_ref, 0); }

static int freeze_env(lua_State *L) {
    int ref = *(int *)lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int env = lua_gettop(L);
    if (lua_getmetatable(L, env)) return 0;  // already frozen
    lua_newtable(L);
    int backing = lua_gettop(L);
    // Move every key to the backing table, then empty the environment.
    lua_pushnil(L);
    while (lua_next(L, env) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, backing);
    }
    lua_pushnil(L);
    while (lua_next(L, backing) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, env);
    }
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, backing);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sb_frozen_env);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    return 0;
}

int moon_freeze_env(lua_State *L, int env_ref) { return moon_pcall(L, freeze_env, &env_ref, 0); }

// ---- running chunks ----------------------------------------------------------------------------------

typedef struct chunk_args {
    int env_ref;
    const char *src;
    size_t len;
    const char *name;
    int *result_ref;
    int syntax_error;
} chunk_args;

static int run_chunk(lua_State *L) {
    chunk_args *a = lua_touserdata(L, 1);
    moon_ctx *ctx = moon_ctx_of(L);
    if (luaL_loadbufferx(L, a->src, a->len, a->name, "t") != LUA_OK) {
        a->syntax_error = 1;
        return lua_error(L);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->env_ref);
    lua_setupvalue(L, -2, 1);
    moon_arm_call(L, ctx->load_deadline_ns);
    lua_call(L, 0, 1);
    moon_disarm(L);
    *a->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int moon_run_chunk(lua_State *L, int env_ref, const char *src, size_t len, const char *chunkname, int *result_ref) {
    chunk_args a = { env_ref, src, len, chunkname, result_ref, 0 };
    *result_ref = LUA_REFNIL;
    int status = moon_pcall(L, run_chunk, &a, 0);
    moon_disarm(L);
    if (status == MOON_ERR_RUNTIME && a.syntax_error) return MOON_ERR_SYNTAX;
    return status;
}

typedef struct field_args { int table_ref; const char *name; int *out; int want_function; } field_args;

static int get_field(lua_State *L) {
    field_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->table_ref);
    if (lua_type(L, -1) != LUA_TTABLE) {
        return luaL_error(L, "expected a table, got a %s value", luaL_typename(L, -1));
    }
    lua_pushstring(L, a->name);
    int t = lua_rawget(L, -2);
    if (t == LUA_TNIL) {
        *a->out = -1;
        return 0;
    }
    if (a->want_function && t != LUA_TFUNCTION) {
        return luaL_error(L, "'%s' must be a function, not a %s value", a->name, lua_typename(L, t));
    }
    *a->out = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int moon_get_function(lua_State *L, int table_ref, const char *name, int *fn_ref) {
    field_args a = { table_ref, name, fn_ref, 1 };
    *fn_ref = -1;
    return moon_pcall(L, get_field, &a, 0);
}

int moon_get_field(lua_State *L, int table_ref, const char *name, int *value_ref) {
    field_args a = { table_ref, name, value_ref, 0 };
    *value_ref = -1;
    return moon_pcall(L, get_field, &a, 0);
}

typedef struct call_args { int fn_ref, arg_ref; } call_args;

static int call_with(lua_State *L) {
    call_args *a = lua_touserdata(L, 1);
    moon_ctx *ctx = moon_ctx_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->fn_ref);
    int nargs = 0;
    if (a->arg_ref >= 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->arg_ref);
        nargs = 1;
    }
    moon_arm_call(L, ctx->load_deadline_ns);
    lua_call(L, nargs, 0);
    moon_disarm(L);
    return 0;
}

int moon_call_with(lua_State *L, int fn_ref, int arg_ref) {
    call_args a = { fn_ref, arg_ref };
    int status = moon_pcall(L, call_with, &a, 0);
    moon_disarm(L);
    return status;
}
