// Script output: `moongate.log(level, message [, fields])` and `print(...)`. A line is checked and
// copied here, inside the hook call, into a queue in malloc'd memory (never the Lua heap), so a fault
// later in the same call loses nothing; Swift drains the queue after the call returns and hands the
// lines to swift-log. Nothing here calls into Swift.
//
// Bounds: a message of at most MOON_LOG_MAX_MESSAGE bytes and field values of at most
// MOON_LOG_MAX_VALUE (longer ones are cut and the line is marked truncated), at most MOON_LOG_MAX_FIELDS
// fields, and a token bucket per plugin of MOON_LOG_RATE lines a second (bursts of as many). Lines over
// the rate, or past the queue's own bounds, are dropped and counted in the plugin's next line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define MOON_LOG_MAX_MESSAGE 4096
#define MOON_LOG_MAX_FIELDS 16
#define MOON_LOG_MAX_KEY 64
#define MOON_LOG_MAX_VALUE 1024
#define MOON_LOG_RATE 100
#define MOON_LOG_MAX_LINES 256            // queued between two drains
#define MOON_LOG_MAX_BYTES (1u << 20)     // of queued text between two drains
#define MOON_LOG_MAX_RECORD (MOON_LOG_MAX_MESSAGE + MOON_LOG_MAX_FIELDS * (MOON_LOG_MAX_KEY + MOON_LOG_MAX_VALUE) + LUA_IDSIZE)

typedef struct moon_log_field { moon_span key, value; int kind; } moon_log_field;

typedef struct moon_log_rec {
    int level, plugin, line, truncated, nfields;
    unsigned dropped;
    moon_span file, message;
    moon_log_field fields[MOON_LOG_MAX_FIELDS];
} moon_log_rec;

typedef struct moon_bucket {
    double tokens;
    uint64_t last_ns;
    unsigned dropped;
    int started;
} moon_bucket;

static const char *const LEVELS[] = { "debug", "info", "notice", "warning", "error", NULL };

// ---- text -------------------------------------------------------------------------------------------

// Copies `s` into `out` (capacity `cap`) with control characters but the tab escaped, so a script
// cannot forge log lines; stops before an escape that would not fit. Returns the bytes written; `*cut` is set
// when not all of `s` fitted.
static size_t escape_into(const char *s, size_t len, char *out, size_t cap, int *cut) {
    static const char HEX[] = "0123456789abcdef";
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[4];
        size_t n = 1;
        if (c == '\n') { esc[0] = '\\'; esc[1] = 'n'; n = 2; }
        else if (c == '\r') { esc[0] = '\\'; esc[1] = 'r'; n = 2; }
        else if ((c < 0x20 && c != '\t') || c == 0x7f) { esc[0] = '\\'; esc[1] = 'x'; esc[2] = HEX[c >> 4]; esc[3] = HEX[c & 15]; n = 4; }
        else esc[0] = (char)c;
        if (w + n > cap) {
            *cut = 1;
            return w;
        }
        memcpy(out + w, esc, n);
        w += n;
    }
    return w;
}

// The text of a number as `tostring` writes it ("3", "0.5", "1.0").
static size_t number_text(lua_State *L, int idx, char *out, size_t cap) {
    int n;
    if (lua_isinteger(L, idx)) {
        n = snprintf(out, cap, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    } else {
        n = snprintf(out, cap, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, idx));
        if (n > 0 && (size_t)n + 2 < cap && strspn(out, "-0123456789") == (size_t)n) {
            memcpy(out + n, ".0", 3);  // looks like an int: add '.0', as Lua does
            n += 2;
        }
    }
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

// ---- checks (they raise, before anything is queued) ---------------------------------------------------

static int level_of(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    for (int i = 0; LEVELS[i]; i++) {
        if (strlen(LEVELS[i]) == len && memcmp(LEVELS[i], s, len) == 0) return i;
    }
    return luaL_argerror(L, 1, "the level must be \"debug\", \"info\", \"notice\", \"warning\" or \"error\"");
}

static int key_ok(const char *k, size_t len) {
    if (len == 0 || len > MOON_LOG_MAX_KEY) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)k[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
        if (!ok) return 0;
    }
    return 1;
}

static int reserved(const char *k, size_t len) {
    static const char *const names[] = { "plugin", "file", "line", "dropped", "truncated", NULL };
    for (int i = 0; names[i]; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], k, len) == 0) return 1;
    }
    return 0;
}

// Checks the fields table at `idx`: string keys (letters, digits, '_', '-', '.'; at most 64 bytes; not
// one Moongate sets), string, number or boolean values, at most MOON_LOG_MAX_FIELDS of them.
static void check_fields(lua_State *L, int idx) {
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            luaL_argerror(L, 3, lua_pushfstring(L, "field names must be strings, not %s values", luaL_typename(L, -2)));
        }
        size_t kl;
        const char *k = lua_tolstring(L, -2, &kl);
        if (!key_ok(k, kl)) {
            luaL_argerror(L, 3, "a field name must be 1 to 64 letters, digits, '_', '-' or '.'");
        }
        if (reserved(k, kl)) luaL_argerror(L, 3, lua_pushfstring(L, "field '%s' is set by Moongate", k));
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN) {
            luaL_argerror(L, 3, lua_pushfstring(L, "field '%s' must be a string, number or boolean, not a %s value", k,
                                                luaL_typename(L, -1)));
        }
        if (++count > MOON_LOG_MAX_FIELDS) luaL_argerror(L, 3, "at most 16 fields");
        lua_pop(L, 1);
    }
}

// ---- the rate limit ------------------------------------------------------------------------------------

static moon_bucket *bucket_of(moon_ctx *ctx) {
    int p = ctx->plugin < 0 ? 0 : ctx->plugin;
    if (p >= ctx->nbuckets) {
        int n = p + 8;
        moon_bucket *grown = realloc(ctx->buckets, (size_t)n * sizeof *grown);
        if (grown == NULL) return NULL;
        memset(grown + ctx->nbuckets, 0, (size_t)(n - ctx->nbuckets) * sizeof *grown);
        ctx->buckets = grown;
        ctx->nbuckets = n;
    }
    return &ctx->buckets[p];
}

// Takes a token from the calling plugin's bucket; 0 (and one more dropped line) when there is none.
static int admit(moon_bucket *b) {
    uint64_t now = moon_now_ns();
    if (!b->started) {
        b->started = 1;
        b->tokens = MOON_LOG_RATE;
    } else {
        b->tokens += (double)(now - b->last_ns) * MOON_LOG_RATE / 1e9;
        if (b->tokens > MOON_LOG_RATE) b->tokens = MOON_LOG_RATE;
    }
    b->last_ns = now;
    if (b->tokens < 1) {
        b->dropped++;
        return 0;
    }
    b->tokens -= 1;
    return 1;
}

// ---- the queue (plain C from here on: nothing raises) -------------------------------------------------

// A new record at the end of the queue, or NULL when the queue is full or memory is short.
static moon_log_rec *new_record(moon_ctx *ctx) {
    if (ctx->nlog >= MOON_LOG_MAX_LINES) return NULL;
    if (ctx->log_arena.used + MOON_LOG_MAX_RECORD > MOON_LOG_MAX_BYTES) return NULL;
    if (ctx->nlog == ctx->log_cap) {
        int cap = ctx->log_cap ? ctx->log_cap * 2 : 8;
        if (cap > MOON_LOG_MAX_LINES) cap = MOON_LOG_MAX_LINES;
        moon_log_rec *grown = realloc(ctx->log_recs, (size_t)cap * sizeof *grown);
        if (grown == NULL) return NULL;
        ctx->log_recs = grown;
        ctx->log_cap = cap;
    }
    moon_log_rec *r = &ctx->log_recs[ctx->nlog];
    memset(r, 0, sizeof *r);
    return r;
}

static int put(moon_ctx *ctx, moon_span *out, const char *p, size_t len) {
    *out = moon_arena_put(&ctx->log_arena, p, len, 0);
    return out->off != MOON_ABSENT;
}

// Queues a line whose message is `text` (already escaped) with the fields of the table at
// `fields_idx` (0 for none). Over the rate or the queue's bounds, the line is counted as dropped.
static void enqueue(lua_State *L, int level, const char *text, size_t len, int truncated, int fields_idx) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_bucket *b = bucket_of(ctx);
    if (b == NULL || !admit(b)) return;
    moon_log_rec *r = new_record(ctx);
    if (r == NULL) {
        b->dropped++;
        return;
    }
    char file[LUA_IDSIZE];
    moon_where_parts(L, file, sizeof file, &r->line);
    size_t mark = ctx->log_arena.used;
    r->level = level;
    r->plugin = ctx->plugin;
    r->truncated = truncated;
    int ok = put(ctx, &r->file, file, strlen(file)) && put(ctx, &r->message, text, len);
    if (ok && fields_idx != 0) {
        char value[MOON_LOG_MAX_VALUE];
        lua_pushnil(L);
        while (ok && lua_next(L, fields_idx) != 0) {
            moon_log_field *f = &r->fields[r->nfields];
            size_t kl, vl = 0;
            const char *k = lua_tolstring(L, -2, &kl);
            switch (lua_type(L, -1)) {
            case LUA_TSTRING: {
                size_t sl;
                const char *s = lua_tolstring(L, -1, &sl);
                vl = escape_into(s, sl, value, sizeof value, &r->truncated);
                f->kind = MOON_FIELD_STRING;
                break;
            }
            case LUA_TNUMBER:
                f->kind = lua_isinteger(L, -1) ? MOON_FIELD_INTEGER : MOON_FIELD_NUMBER;
                vl = number_text(L, -1, value, sizeof value);
                break;
            default:
                f->kind = MOON_FIELD_BOOLEAN;
                vl = (size_t)snprintf(value, sizeof value, "%s", lua_toboolean(L, -1) ? "true" : "false");
                break;
            }
            ok = put(ctx, &f->key, k, kl) && put(ctx, &f->value, value, vl);
            r->nfields++;
            lua_pop(L, ok ? 1 : 2);  // the value (and, when stopping early, the key too)
        }
    }
    if (!ok) {  // no memory for the text: the line is dropped, not half-kept
        ctx->log_arena.used = mark;
        b->dropped++;
        return;
    }
    r->dropped = b->dropped;
    b->dropped = 0;
    ctx->nlog++;
}

// ---- the functions scripts call -------------------------------------------------------------------------

// moongate.log(level, message [, fields])
static int script_log(lua_State *L) {
    int level = level_of(L);
    size_t len;
    const char *message = luaL_checklstring(L, 2, &len);
    int t = lua_type(L, 3);
    if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TTABLE) return luaL_typeerror(L, 3, "table of fields or nil");
    if (t == LUA_TTABLE) check_fields(L, 3);
    lua_settop(L, 3);
    char text[MOON_LOG_MAX_MESSAGE];
    int cut = 0;
    size_t n = escape_into(message, len, text, sizeof text, &cut);
    enqueue(L, level, text, n, cut, t == LUA_TTABLE ? 3 : 0);
    return 0;
}

// print(...): the arguments as `tostring` writes them, joined by tabs, logged at debug level.
static int script_print(lua_State *L) {
    int n = lua_gettop(L);
    char text[MOON_LOG_MAX_MESSAGE];
    size_t used = 0;
    int cut = 0;
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);  // may run __tostring (under the budget)
        if (i > 1 && !cut) used += escape_into("\t", 1, text + used, sizeof text - used, &cut);
        if (!cut) used += escape_into(s, len, text + used, sizeof text - used, &cut);
        lua_pop(L, 1);
    }
    enqueue(L, MOON_LOG_DEBUG, text, used, cut, 0);
    return 0;
}

void moon_install_log(lua_State *L, int mg, int template) {
    lua_pushcfunction(L, script_log);
    lua_setfield(L, mg, "log");
    lua_pushcfunction(L, script_print);
    lua_setfield(L, template, "print");
}

// ---- draining (Swift, after the call) ----------------------------------------------------------------

void moon_set_plugin(lua_State *L, int plugin) { moon_ctx_of(L)->plugin = plugin; }

int moon_log_count(lua_State *L) { return moon_ctx_of(L)->nlog; }

// The bytes of a span of the queue's text ("" while the arena has none).
static const char *text_at(moon_ctx *ctx, moon_span s) {
    return ctx->log_arena.bytes ? ctx->log_arena.bytes + s.off : "";
}

void moon_log_entry_at(lua_State *L, int i, moon_log_entry *out) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_log_rec *r = &ctx->log_recs[i];
    out->level = r->level;
    out->plugin = r->plugin;
    out->line = r->line;
    out->dropped = r->dropped;
    out->truncated = r->truncated;
    out->file = text_at(ctx, r->file);
    out->file_len = r->file.len;
    out->message = text_at(ctx, r->message);
    out->message_len = r->message.len;
    out->field_count = r->nfields;
}

int moon_log_field_at(lua_State *L, int i, int f, const char **key, size_t *klen, const char **value, size_t *vlen) {
    moon_ctx *ctx = moon_ctx_of(L);
    moon_log_field *field = &ctx->log_recs[i].fields[f];
    *key = text_at(ctx, field->key);
    *klen = field->key.len;
    *value = text_at(ctx, field->value);
    *vlen = field->value.len;
    return field->kind;
}

void moon_log_clear(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->nlog = 0;
    moon_arena_reset(&ctx->log_arena);
}

void moon_free_log(moon_ctx *ctx) {
    free(ctx->log_recs);
    free(ctx->log_arena.bytes);
    free(ctx->buckets);
    ctx->log_recs = NULL;
    ctx->log_arena = (moon_arena){ NULL, 0, 0 };
    ctx->buckets = NULL;
    ctx->nlog = ctx->log_cap = ctx->nbuckets = 0;
}
