// The state: a capped allocator, the instruction budget, protected entry points and errors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

moon_ctx *moon_ctx_of(lua_State *L) { return *(moon_ctx **)lua_getextraspace(L); }

// Records where a refused allocation happened (the innermost Lua function and its line), so that a
// memory-cap error can name the script and line like any other error.
static void note_oom_site(moon_ctx *ctx) {
    lua_Debug ar;
    ctx->oom_where[0] = 0;
    if (ctx->L == NULL) return;
    for (int level = 0; level < 4 && lua_getstack(ctx->L, level, &ar); level++) {
        if (lua_getinfo(ctx->L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(ctx->oom_where, sizeof ctx->oom_where, "%s:%d:", ar.short_src, ar.currentline);
            return;
        }
    }
}

// lua_Alloc with a byte cap. `osize` is a type tag when ptr is NULL; shrinking never fails.
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    moon_ctx *ctx = (moon_ctx *)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        ctx->used -= old;
        return NULL;
    }
    if (nsize > old && ctx->cap && ctx->used - old + nsize > ctx->cap) {
        if (!ctx->mem_hit) note_oom_site(ctx);
        ctx->mem_hit = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    ctx->used = ctx->used - old + nsize;
    return p;
}

static int panic_handler(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "moongate: unprotected Lua error: %s\n", msg ? msg : "?");
    abort();
}

static void silent_warn(void *ud, const char *msg, int tocont) {
    (void)ud; (void)msg; (void)tocont;
}

// The count hook: the budget is spent. Raise an error naming the running script and line, and
// re-arm with a count of 1 so a script that catches the error with pcall cannot go on.
static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->budget_hit = 1;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    lua_Debug here;
    if (lua_getstack(L, 0, &here) && lua_getinfo(L, "Sl", &here) && here.currentline > 0) {
        lua_pushfstring(L, "%s:%d: instruction budget of %d exceeded", here.short_src, here.currentline,
                        ctx->budget);
    } else {
        lua_pushfstring(L, "instruction budget of %d exceeded", ctx->budget);
    }
    lua_error(L);
}

void moon_arm_budget(lua_State *L, int instructions) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->budget_hit = 0;
    if (instructions > 0) {
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, instructions);
    } else {
        lua_sethook(L, NULL, 0, 0);
    }
}

void moon_arena_reset(moon_arena *a) { a->used = 0; }

moon_span moon_arena_put(moon_arena *a, const char *p, size_t len, int lower) {
    moon_span s = { MOON_ABSENT, 0 };
    if (a->used + len > a->cap) {
        size_t ncap = a->cap ? a->cap : 1024;
        while (ncap < a->used + len) ncap *= 2;
        char *nb = realloc(a->bytes, ncap);
        if (nb == NULL) return s;
        a->bytes = nb;
        a->cap = ncap;
    }
    char *dst = a->bytes + a->used;
    if (lower) {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)p[i];
            dst[i] = (char)(c | (((unsigned)(c - 'A') < 26u) << 5));
        }
    } else if (len) {
        memcpy(dst, p, len);
    }
    s.off = (uint32_t)a->used;
    s.len = (uint32_t)len;
    a->used += len;
    return s;
}

// Protected trampoline: Swift-facing entry points run `f(arg)` through lua_pcall so that nothing
// raises across a Swift frame. The error message (if any) is copied into ctx->errbuf.
static int message_handler(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    return 1;
}

static int classify_and_copy(lua_State *L, int status, int base) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (status == LUA_OK) return MOON_OK;
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unknown error";
    int code = MOON_ERR_RUNTIME;
    if (status == LUA_ERRMEM || ctx->mem_hit) {
        code = MOON_ERR_MEMORY;
        snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s%smemory cap of %zu bytes exceeded", ctx->oom_where,
                 ctx->oom_where[0] ? " " : "", ctx->cap);
    } else {
        if (ctx->budget_hit) code = MOON_ERR_BUDGET;
        else if (ctx->invalid_return) code = MOON_ERR_INVALID;
        snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s", msg);
    }
    lua_settop(L, base);
    return code;
}

int moon_pcall(lua_State *L, lua_CFunction f, void *arg, int nresults) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->mem_hit = 0;
    ctx->invalid_return = 0;
    ctx->errbuf[0] = 0;
    int base = lua_gettop(L);
    lua_pushcfunction(L, message_handler);
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, arg);
    int status = lua_pcall(L, 1, nresults, base + 1);
    if (status != LUA_OK) return classify_and_copy(L, status, base);
    lua_remove(L, base + 1);
    return MOON_OK;
}

const char *moon_last_error(lua_State *L) { return moon_ctx_of(L)->errbuf; }

lua_State *moon_newstate(size_t mem_cap) {
    moon_ctx *ctx = calloc(1, sizeof(moon_ctx));
    if (ctx == NULL) return NULL;
    ctx->cap = 0;  // no cap while the libraries load; set below
    lua_State *L = lua_newstate(capped_alloc, ctx);
    if (L == NULL) {
        free(ctx);
        return NULL;
    }
    ctx->L = L;
    *(moon_ctx **)lua_getextraspace(L) = ctx;
    lua_atpanic(L, panic_handler);
    lua_setwarnf(L, silent_warn, NULL);
    ctx->req_ref = ctx->res_ref = ctx->edit_ref = ctx->target_ref = ctx->client_ref = LUA_NOREF;
    ctx->template_ref = LUA_NOREF;
    ctx->budget = 1000000;
    extern int moon_open_sandbox(lua_State * L);
    if (moon_open_sandbox(L) != MOON_OK) {
        fprintf(stderr, "moongate: sandbox set-up failed: %s\n", ctx->errbuf);
        moon_close(L);
        return NULL;
    }
    ctx->cap = mem_cap;
    return L;
}

void moon_close(lua_State *L) {
    if (L == NULL) return;
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->cap = 0;
    lua_close(L);
    free(ctx->req.arena.bytes);
    free(ctx->res.arena.bytes);
    free(ctx->edit_arena.bytes);
    free(ctx);
}

size_t moon_mem_used(lua_State *L) { return moon_ctx_of(L)->used; }
size_t moon_heap_bytes(lua_State *L) { return moon_ctx_of(L)->used; }
void moon_set_mem_cap(lua_State *L, size_t cap) { moon_ctx_of(L)->cap = cap; }
void moon_set_budget(lua_State *L, int instructions) { moon_ctx_of(L)->budget = instructions; }

static int do_full_gc(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

void moon_full_gc(lua_State *L) { (void)moon_pcall(L, do_full_gc, NULL, 0); }

void moon_unref(lua_State *L, int ref) {
    if (ref >= 0) luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void moon_free(void *p) { free(p); }
