// The state: a capped allocator, the instruction budget, protected entry points and errors.
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

moon_ctx *moon_ctx_of(lua_State *L) { return *(moon_ctx **)lua_getextraspace(L); }

// The innermost Lua function on the stack with a current line. From a C function called by Lua that
// is its caller; from a hook, the running function.
void moon_where_parts(lua_State *L, char *file, size_t cap, int *line) {
    lua_Debug ar;
    file[0] = 0;
    *line = 0;
    for (int level = 0; level < 4 && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(file, cap, "%s", ar.short_src);
            *line = ar.currentline;
            return;
        }
    }
}

// The same as "probe.lua:12:", or "" outside Lua code.
static void where(lua_State *L, char *out, size_t cap) {
    char file[LUA_IDSIZE];
    int line;
    moon_where_parts(L, file, sizeof file, &line);
    if (line > 0) snprintf(out, cap, "%s:%d:", file, line);
    else out[0] = 0;
}

static uint64_t monotonic_ns(void);
static int deadline_passed(moon_ctx *ctx);
static void instruction_hook(lua_State *L, lua_Debug *ar);

// lua_Alloc with a byte cap. `osize` is a type tag when ptr is NULL; shrinking never fails. A string
// object over MOON_MAX_STRING is refused too, which bounds the work of every linear library call.
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    moon_ctx *ctx = (moon_ctx *)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        ctx->used -= old;
        return NULL;
    }
    // A large allocation polls the deadline too (a loop of `big .. x` copies a lot per instruction).
    // Past it, the allocation is refused and the hook is armed to stop at the next instruction; the
    // resulting error is reported as a deadline, not a memory fault.
    if (nsize >= (64u << 10) && nsize > old && ctx->L && (ctx->deadline_hit || deadline_passed(ctx))) {
        if (!ctx->deadline_hit) where(ctx->L, ctx->oom_where, sizeof ctx->oom_where);
        ctx->deadline_hit = 1;
        lua_sethook(ctx->L, instruction_hook, LUA_MASKCOUNT, 1);
        return NULL;
    }
    if (nsize > old && ctx->cap) {
        int too_long = ptr == NULL && osize == LUA_TSTRING && nsize > MOON_MAX_STRING + 64;
        if (too_long || ctx->used - old + nsize > ctx->cap) {
            if (!ctx->mem_hit && ctx->L) where(ctx->L, ctx->oom_where, sizeof ctx->oom_where);
            ctx->mem_hit = 1;
            ctx->string_cap_hit = too_long;
            return NULL;
        }
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    // An allocation that succeeds after a refusal (Lua's emergency collection freed enough) means
    // the cap was not, in the end, what stopped the script.
    if (nsize > old) ctx->mem_hit = 0;
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

int moon_fail(lua_State *L, int code) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->fault_code = code;
    ctx->fault_msg = lua_tostring(L, -1);
    return lua_error(L);
}

int moon_raise(lua_State *L, int code, const char *fmt, ...) {
    char at[160];
    where(L, at, sizeof at);
    va_list ap;
    va_start(ap, fmt);
    lua_pushstring(L, at);
    if (at[0]) lua_pushliteral(L, " ");
    else lua_pushliteral(L, "");
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    return moon_fail(L, code);
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t moon_now_ns(void) { return monotonic_ns(); }

// Every stop is final: once the budget or the deadline has stopped a call, the hook fires at every
// instruction and raises again, so a script that catches the error with pcall cannot go on.
static void stop_for_good(lua_State *L) { lua_sethook(L, instruction_hook, LUA_MASKCOUNT, 1); }

static void raise_deadline(lua_State *L, moon_ctx *ctx) {
    ctx->deadline_hit = 1;
    stop_for_good(L);
    moon_raise(L, MOON_ERR_DEADLINE, "hook deadline of %d ms exceeded",
               (int)((ctx->deadline_ns + 999999) / 1000000));
}

static void raise_budget(lua_State *L, moon_ctx *ctx) {
    ctx->budget_hit = 1;
    stop_for_good(L);
    moon_raise(L, MOON_ERR_BUDGET, "instruction budget of %d exceeded", ctx->budget);
}

// True once the running call is past its deadline. The clock starts at the first poll, not at the
// call: the fast path (a hook that ends within a few hundred instructions) never reads it. What runs
// before the first poll is at most one hook period of instructions or a few thousand matcher steps.
static int deadline_passed(moon_ctx *ctx) {
    if (ctx->deadline_ns == 0) return 0;
    uint64_t now = monotonic_ns();
    if (ctx->call_start_ns == 0) {
        ctx->call_start_ns = now;
        return 0;
    }
    return now - ctx->call_start_ns > ctx->deadline_ns;
}

void moon_deadline_poll(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->deadline_hit || deadline_passed(ctx)) raise_deadline(L, ctx);
}

// The instruction hook fires every `hook_period` instructions: it spends the budget and polls the
// deadline (one clock read per thousand instructions).
#define MOON_HOOK_PERIOD 1000

static void arm_hook(lua_State *L, moon_ctx *ctx) {
    int period = MOON_HOOK_PERIOD;
    if (ctx->budget > 0 && ctx->budget_left < period) period = ctx->budget_left;
    ctx->hook_period = period;
    lua_sethook(L, instruction_hook, LUA_MASKCOUNT, period);
}

static void instruction_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->budget_hit) raise_budget(L, ctx);
    moon_deadline_poll(L);
    if (ctx->budget > 0) {
        ctx->budget_left -= ctx->hook_period;
        if (ctx->budget_left <= 0) raise_budget(L, ctx);
        arm_hook(L, ctx);
    }
}

static void begin_call(lua_State *L, moon_ctx *ctx, uint64_t deadline_ns) {
    ctx->budget_hit = 0;
    ctx->deadline_hit = 0;
    ctx->deadline_ns = deadline_ns;
    ctx->call_start_ns = 0;
    ctx->budget_left = ctx->budget;
    if (ctx->budget > 0 || deadline_ns > 0) arm_hook(L, ctx);
    else lua_sethook(L, NULL, 0, 0);
}

void moon_disarm(lua_State *L) {  // between calls: nothing is timed or stopped
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->deadline_ns = 0;
    ctx->deadline_hit = 0;
    ctx->budget_hit = 0;
    lua_sethook(L, NULL, 0, 0);
}

void moon_arm_call(lua_State *L, uint64_t deadline_ns) { begin_call(L, moon_ctx_of(L), deadline_ns); }

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
    if (ctx->deadline_hit) {
        code = MOON_ERR_DEADLINE;
        if (strstr(msg, "hook deadline") != NULL) {
            snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s", msg);
        } else {  // stopped inside an allocation
            snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s%shook deadline of %d ms exceeded", ctx->oom_where,
                     ctx->oom_where[0] ? " " : "", (int)((ctx->deadline_ns + 999999) / 1000000));
        }
    } else if (status == LUA_ERRMEM || (ctx->mem_hit && strcmp(msg, "not enough memory") == 0)) {
        code = MOON_ERR_MEMORY;
        if (ctx->string_cap_hit) {
            snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s%sa string over the sandbox's string limit of %u bytes",
                     ctx->oom_where, ctx->oom_where[0] ? " " : "", (unsigned)MOON_MAX_STRING);
        } else {
            snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s%smemory cap of %zu bytes exceeded", ctx->oom_where,
                     ctx->oom_where[0] ? " " : "", ctx->cap);
        }
    } else {
        // A fault our own C code raised keeps its kind while its message is what ended the call
        // (a script that caught it and raised something else gets a runtime error). The budget and
        // the deadline cannot be caught at all.
        if (ctx->budget_hit) code = MOON_ERR_BUDGET;
        else if (ctx->fault_msg != NULL && lua_tostring(L, -1) == ctx->fault_msg) code = ctx->fault_code;
        snprintf(ctx->errbuf, sizeof ctx->errbuf, "%s", msg);
    }
    lua_settop(L, base);
    if (code == MOON_ERR_MEMORY) {
        // The failed call's values stay in the stack slots above the top, and the next call of the
        // same function reuses them as its frame before it overwrites them, which would keep the
        // garbage of a memory bomb alive (the next request on this loop would hit the cap too). A
        // full collection now clears the dead slice of the stack and frees it. Memory faults are
        // rare, and this collection is what the failed allocation's emergency collection was.
        lua_gc(L, LUA_GCCOLLECT, 0);
    }
    return code;
}

int moon_pcall(lua_State *L, lua_CFunction f, void *arg, int nresults) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->mem_hit = 0;
    ctx->string_cap_hit = 0;
    ctx->fault_msg = NULL;
    ctx->fault_code = MOON_ERR_RUNTIME;
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
    ctx->req_ref = ctx->res_ref = ctx->edit_ref = ctx->target_ref = ctx->client_ref = ctx->tls_ref = LUA_NOREF;
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
    moon_free_log(ctx);
    moon_free_clusters(ctx);
    moon_free_data_files(ctx);
    free(ctx);
}

size_t moon_mem_used(lua_State *L) { return moon_ctx_of(L)->used; }
size_t moon_heap_bytes(lua_State *L) { return moon_ctx_of(L)->used; }
void moon_set_mem_cap(lua_State *L, size_t cap) { moon_ctx_of(L)->cap = cap; }
void moon_set_budget(lua_State *L, int instructions) { moon_ctx_of(L)->budget = instructions; }

void moon_set_deadlines(lua_State *L, uint64_t hook_ns, uint64_t load_ns) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->call_deadline_ns = hook_ns;
    ctx->load_deadline_ns = load_ns;
}

static int do_full_gc(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

void moon_full_gc(lua_State *L) { (void)moon_pcall(L, do_full_gc, NULL, 0); }

void moon_unref(lua_State *L, int ref) {
    if (ref >= 0) luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void moon_free(void *p) { free(p); }
