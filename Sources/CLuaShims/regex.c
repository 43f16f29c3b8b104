// moongate.regex: RE2 regular expressions for policy scripts. RE2 (through CRE2Bridge) matches in
// time linear in the input, with no backtracking, so a hostile request cannot make a script's regex
// run away the way a backtracking matcher does on "(a+)+b" (or Lua's on ".-.-.-x").
//
//   local re = moongate.regex("^/api/v([0-9]+)/", { caseless = true })   -- build once, in init
//   re:match(s [, init])  -> the captures (false for a group that did not take part), the whole
//                            match when there are no groups, or nil (like string.match)
//   re:find(s [, init])   -> start, end (1-based, inclusive) and the captures, or nil (like string.find)
//   re:test(s)            -> boolean
//
// `init` counts like string.find's (negative from the end). Unlike a Lua pattern, `^` anchors at
// the start of the subject, not at `init`: the bytes before `init` are context (RE2's semantics).
#include <string.h>
#include "CRE2Bridge.h"
#include "internal.h"

#define REGEX_META "moongate.regex"

/// The longest pattern accepted. RE2 keeps the parse tree (measured 13-30 bytes per pattern byte)
/// and compiling is linear in the pattern, but not cheap in the worst case: 64 KiB of `\pL` takes
/// ~3 s, 16 KiB ~0.75 s (and a few MiB for a moment, outside the Lua cap). Regexes are compiled only
/// while a plugin loads (never in a hook), under `policy.init_deadline`.
#define MOON_REGEX_MAX_PATTERN (16u * 1024u)

/// The most instructions a regex's forward program (RE2::ProgramSize) may have. RE2 is linear in
/// the input, but not free: when a pattern's DFA explodes (`(?:a|b)*a(?:a|b){N}`-like shapes) and
/// the input feeds it, RE2 falls back on its NFA, which costs ~5 ns per input byte per instruction
/// and cannot be interrupted (measured: 1,007 instructions on 1 MiB of random a/b, 5.0 s; 3,997
/// instructions, 21.6 s on 1 MiB and 124 ms on 8 KiB). Ordinary patterns stay on the DFA (~1.5 ms
/// per MiB). 5,000 admits `(?i)\w{400}` (3,204) and `\pL` (1,197); Envoy's default
/// `max_program_size` is 100. What bounds a single match is MOON_REGEX_MAX_WORK below.
#define MOON_REGEX_MAX_PROGRAM 5000

/// The most work one match may be given: input bytes times program instructions. RE2 cannot be
/// interrupted once it runs, and its slowest path costs ~5 ns per byte per instruction, so this
/// bounds a match to ~80 ms in the very worst case (a pattern whose DFA explodes; ordinary matches
/// take microseconds). Over it, the match is refused with a fault naming both numbers: a regex of
/// 100 instructions takes inputs up to 160 KiB, one with `\pL` (1,197) up to 14 KiB.
#define MOON_REGEX_MAX_WORK ((uint64_t)1 << 24)

/// RE2's memory budget per regex (RE2::Options::set_max_mem): it bounds the compiled programs and
/// the DFA caches built while matching. A DFA that fills its share flushes and starts over, and
/// falls back on the (still linear) NFA if that happens too often.
#define MOON_REGEX_MAX_MEM ((int64_t)256 << 10)

/// What a regex is charged against the state's memory cap (`ctx->used`), given back by `__gc`.
/// RE2 allocates with `new`, outside the Lua allocator, so it is an estimate:
///   MOON_REGEX_MAX_MEM in full: the programs and DFA caches stay within it, and hostile input does
///     fill the DFA caches (measured up to ~370 KiB per 1 MiB budget, so this is a safe upper bound);
///   + 32 bytes per pattern byte: the pattern copies and parse trees RE2 keeps outside that budget
///     (measured 13-30 bytes per pattern byte on large patterns);
///   + 2 KiB: the RE2 object and its bookkeeping (measured ~1.4 KiB for a small pattern).
/// With the default 16 MiB cap a state holds about sixty regexes next to its scripts' data.
#define MOON_REGEX_PER_PATTERN_BYTE 32u
#define MOON_REGEX_FIXED_CHARGE 2048u

/// A match polls the call's deadline first when its input is over MOON_REGEX_POLL_BYTES, or when
/// the input's length times the program's size is over MOON_REGEX_POLL_WORK: RE2 cannot be
/// interrupted once it runs, and on its NFA path a byte costs ~5 ns per instruction, so a loop of
/// shorter matches against a large program could otherwise outrun the deadline between two
/// instruction-hook polls (~250 calls). Below the work bound a match costs at most ~0.3 ms; above
/// it, the clock read is a small part of even a DFA match. Compiling always polls first.
#define MOON_REGEX_POLL_BYTES (16u * 1024u)
#define MOON_REGEX_POLL_WORK ((uint64_t)1 << 16)

/// Captures at most this many groups in a C stack buffer; more use a temporary userdata.
#define MOON_REGEX_STACK_GROUPS 32

/// The userdata behind a regex. Scripts never see its metatable (`__metatable` is false).
typedef struct moon_regex {
    moon_re2 *re;   // NULL until compiled (and after __gc)
    size_t charge;  // bytes added to ctx->used for this regex, given back by __gc
    int groups;     // capturing groups
    int program;    // instructions of the forward program
    int flags;      // MOON_RE2_CASELESS | MOON_RE2_LATIN1
} moon_regex;

static moon_regex *check_regex(lua_State *L) {
    moon_regex *rx = luaL_checkudata(L, 1, REGEX_META);
    if (rx->re == NULL) luaL_argerror(L, 1, "regex is not compiled");
    return rx;
}

// string.find's init: 1-based, negative counts from the end; returns a 0-based offset, or
// len + 1 when init is past the end (no match possible).
static size_t start_offset(lua_State *L, int arg, size_t len) {
    lua_Integer pos = luaL_optinteger(L, arg, 1);
    size_t init;
    if (pos > 0) init = (size_t)pos;
    else if (pos == 0) init = 1;
    else if (pos < -(lua_Integer)len) init = 1;
    else init = len + (size_t)pos + 1;
    return init - 1 <= len ? init - 1 : len + 1;
}

// Copies at most 60 bytes of the pattern, quoted, for error messages (control bytes become '?').
static const char *quote_pattern(const char *p, size_t len, char *buf, size_t cap) {
    size_t n = len < 60 ? len : 60, j = 0;
    buf[j++] = '\'';
    for (size_t i = 0; i < n && j + 5 < cap; i++) buf[j++] = (unsigned char)p[i] < 0x20 ? '?' : p[i];
    if (n < len) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j++] = '\'';
    buf[j] = 0;
    return buf;
}

// Adds `bytes` to the state's allocation count, or raises a memory-cap error. A full collection
// runs first when the charge would pass the cap: Lua's collector does not see RE2's memory, so
// regexes a script has dropped may still be counted until it runs.
static void charge_memory(lua_State *L, size_t bytes) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->cap != 0 && (ctx->used > ctx->cap || bytes > ctx->cap - ctx->used)) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        if (ctx->used > ctx->cap || bytes > ctx->cap - ctx->used) {
            moon_raise(L, MOON_ERR_MEMORY, "moongate.regex: memory cap of %d bytes exceeded (a regex counts %d)",
                       (int)(ctx->cap > INT32_MAX ? INT32_MAX : ctx->cap), (int)bytes);
        }
    }
    ctx->used += bytes;
}

// moongate.regex(pattern [, { caseless = bool, latin1 = bool }])
static int regex_new(lua_State *L) {
    size_t len;
    const char *pattern = luaL_checklstring(L, 1, &len);
    if (moon_ctx_of(L)->in_call) {
        return moon_raise(L, MOON_ERR_RUNTIME,
                          "moongate.regex: compile regexes when the plugin loads (its module body or init), not in a hook");
    }
    int flags = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            int bit = key == NULL ? 0 : strcmp(key, "caseless") == 0 ? MOON_RE2_CASELESS
                                      : strcmp(key, "latin1") == 0   ? MOON_RE2_LATIN1
                                                                     : 0;
            if (bit == 0) {
                const char *what = key ? lua_pushfstring(L, "'%s'", key)
                                       : lua_pushfstring(L, "(a %s key)", luaL_typename(L, -2));
                return luaL_argerror(L, 2, lua_pushfstring(L, "unknown option %s (caseless, latin1)", what));
            }
            if (lua_type(L, -1) != LUA_TBOOLEAN) {
                return luaL_argerror(L, 2, lua_pushfstring(L, "option '%s' must be a boolean", key));
            }
            if (lua_toboolean(L, -1)) flags |= bit;
            lua_pop(L, 1);
        }
    }
    if (len > MOON_REGEX_MAX_PATTERN) {
        return moon_raise(L, MOON_ERR_RUNTIME, "moongate.regex: pattern of %d bytes is over the limit of %d",
                          (int)(len > INT32_MAX ? INT32_MAX : len), (int)MOON_REGEX_MAX_PATTERN);
    }
    moon_regex *rx = lua_newuserdatauv(L, sizeof(moon_regex), 1);
    rx->re = NULL;
    rx->charge = 0;
    rx->groups = 0;
    rx->program = 0;
    rx->flags = flags;
    luaL_setmetatable(L, REGEX_META);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);  // the pattern, for __tostring

    moon_deadline_poll(L);  // compiling is linear in the pattern but not cheap (up to ~3 s at 64 KiB)
    char err[256];
    moon_re2 *re = NULL;
    int status = moon_re2_compile(pattern, len, flags, MOON_REGEX_MAX_MEM, MOON_REGEX_MAX_PROGRAM, &re, err,
                                  sizeof err);
    if (status != MOON_RE2_OK) {
        char quoted[80];
        return moon_raise(L, MOON_ERR_RUNTIME, "moongate.regex: cannot compile %s: %s",
                          quote_pattern(pattern, len, quoted, sizeof quoted), err);
    }
    rx->re = re;  // owned by the userdata from here: __gc frees it even if the charge is refused
    rx->groups = moon_re2_groups(re);
    rx->program = moon_re2_program_size(re);
    size_t bytes = (size_t)MOON_REGEX_MAX_MEM + MOON_REGEX_PER_PATTERN_BYTE * len + MOON_REGEX_FIXED_CHARGE;
    charge_memory(L, bytes);
    rx->charge = bytes;
    return 1;
}

static int regex_gc(lua_State *L) {
    moon_regex *rx = luaL_checkudata(L, 1, REGEX_META);
    moon_re2_free(rx->re);
    rx->re = NULL;
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->used -= rx->charge < ctx->used ? rx->charge : ctx->used;
    rx->charge = 0;
    return 0;
}

static int regex_tostring(lua_State *L) {
    moon_regex *rx = luaL_checkudata(L, 1, REGEX_META);
    lua_getiuservalue(L, 1, 1);
    size_t len;
    const char *p = lua_tolstring(L, -1, &len);
    char quoted[80];
    lua_pushfstring(L, REGEX_META "(%s%s%s)", p ? quote_pattern(p, len, quoted, sizeof quoted) : "?",
                    (rx->flags & MOON_RE2_CASELESS) ? ", caseless" : "",
                    (rx->flags & MOON_RE2_LATIN1) ? ", latin1" : "");
    return 1;
}

// Runs the search for match/find/test: returns 1 on a match with `want` offset pairs filled into
// `*out` (a stack buffer or a temporary userdata), 0 on none.
static int run_match(lua_State *L, moon_regex *rx, const char *s, size_t len, size_t init, int want,
                     ptrdiff_t *stack_buf, ptrdiff_t **out) {
    *out = stack_buf;
    if (want > MOON_REGEX_STACK_GROUPS + 1) *out = lua_newuserdatauv(L, sizeof(ptrdiff_t) * 2 * (size_t)want, 0);
    size_t n = len - init;
    if ((uint64_t)n * (uint64_t)rx->program > MOON_REGEX_MAX_WORK) {
        return moon_raise(L, MOON_ERR_RUNTIME,
                          "moongate.regex: an input of %d bytes is too long for this regex of %d instructions "
                          "(bytes x instructions may be at most %d)",
                          (int)(n > INT32_MAX ? INT32_MAX : n), rx->program, (int)MOON_REGEX_MAX_WORK);
    }
    if (n > MOON_REGEX_POLL_BYTES || (uint64_t)n * (uint64_t)rx->program > MOON_REGEX_POLL_WORK) {
        moon_deadline_poll(L);
    }
    int r = moon_re2_match(rx->re, s, len, init, *out, 2 * want);
    if (r < 0) {
        return moon_raise(L, MOON_ERR_RUNTIME, "moongate.regex: %s while matching",
                          r == -MOON_RE2_ERR_NOMEM ? "out of memory" : "internal error");
    }
    return r;
}

// Pushes captures 1..groups (false for a group that did not take part), or the whole match when
// there are none; returns how many values it pushed.
static int push_captures(lua_State *L, const moon_regex *rx, const char *s, const ptrdiff_t *off) {
    if (rx->groups == 0) {
        lua_pushlstring(L, s + off[0], (size_t)(off[1] - off[0]));
        return 1;
    }
    luaL_checkstack(L, rx->groups + 3, "too many captures");
    for (int i = 1; i <= rx->groups; i++) {
        if (off[2 * i] < 0) lua_pushboolean(L, 0);
        else lua_pushlstring(L, s + off[2 * i], (size_t)(off[2 * i + 1] - off[2 * i]));
    }
    return rx->groups;
}

// What match and find share: the arguments (self, subject, init) checked and the search run.
// Returns 0 with nil pushed when nothing matches.
static int search(lua_State *L, moon_regex **rx, const char **s, ptrdiff_t *buf, ptrdiff_t **off) {
    *rx = check_regex(L);
    size_t len;
    *s = luaL_checklstring(L, 2, &len);
    size_t init = start_offset(L, 3, len);
    if (init > len || !run_match(L, *rx, *s, len, init, (*rx)->groups + 1, buf, off)) {
        luaL_pushfail(L);
        return 0;
    }
    return 1;
}

static int regex_match(lua_State *L) {
    moon_regex *rx;
    const char *s;
    ptrdiff_t buf[2 * (MOON_REGEX_STACK_GROUPS + 1)], *off;
    if (!search(L, &rx, &s, buf, &off)) return 1;
    return push_captures(L, rx, s, off);
}

static int regex_find(lua_State *L) {
    moon_regex *rx;
    const char *s;
    ptrdiff_t buf[2 * (MOON_REGEX_STACK_GROUPS + 1)], *off;
    if (!search(L, &rx, &s, buf, &off)) return 1;
    lua_pushinteger(L, (lua_Integer)off[0] + 1);
    lua_pushinteger(L, (lua_Integer)off[1]);
    return 2 + (rx->groups > 0 ? push_captures(L, rx, s, off) : 0);
}

static int regex_test(lua_State *L) {
    moon_regex *rx = check_regex(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    ptrdiff_t *off;
    lua_pushboolean(L, run_match(L, rx, s, len, 0, 0, NULL, &off));
    return 1;
}

void moon_install_regex(lua_State *L, int moongate_table) {
    static const luaL_Reg methods[] = {
        { "match", regex_match }, { "find", regex_find }, { "test", regex_test }, { NULL, NULL },
    };
    moongate_table = lua_absindex(L, moongate_table);
    moon_register_meta(L, REGEX_META, methods);
    lua_pushcfunction(L, regex_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, regex_new);
    lua_setfield(L, moongate_table, "regex");
}
