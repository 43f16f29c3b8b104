// moongate.htpasswd: users and password hashes from an htpasswd file, checked through the C
// library's crypt(3) (libxcrypt: bcrypt, SHA-crypt), with a bounded cache of verified credentials.
//
//   local users = moongate.htpasswd("users.htpasswd")   -- in the module body or init only
//   users:check(user, password)  -> true or false
//   users:stats()                 -> { users = n, cached = n, hits = n, misses = n }
//
// A path is relative to the config file's folder. The file is read once per generation (the load
// that checks it) and every Lua state of the generation uses that copy (data_files.c).
//
// Cost. A bcrypt verification takes tens of milliseconds (cost 10), and crypt(3) cannot be
// interrupted, so it cannot hide inside the hook deadline: the deadline is what the other
// connections of the event loop wait at most. The rules:
//   - loading: a file whose slowest hash takes longer to verify (estimated on this machine) than the
//     loading plugin's hook deadline is refused, with a message giving the deadline to set;
//   - a check first looks in the cache: a credential verified before (right or wrong) costs one
//     SHA-256 and no crypt, until it is evicted or the generation ends;
//   - a miss runs crypt only if the estimated cost fits in what is left of the call's deadline (else
//     it is a deadline fault before any work), and the deadline is polled after it;
//   - an unknown user costs nothing (no crypt; the answer is false).
#define _GNU_SOURCE  // qsort_r
#include <crypt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "htpasswd.h"

#define HTPASSWD_META "moongate.htpasswd"
/// The cache: 256 sets of 4 credentials (1,024 in all), least recently used out first.
#define CACHE_SETS 256
#define CACHE_WAYS 4
#define MAX_USER 255
/// Longer passwords are refused without hashing (crypt(3)'s limit is 512 bytes).
#define MAX_PASSWORD 512
#define MAX_PATH 4096

typedef struct ht_user {
    uint32_t name_off, name_len, hash_off, hash_len;
    int line;
    moon_hash_kind kind;
    uint64_t cost_ns;  // the estimated time of one verification
} ht_user;

enum { SLOT_EMPTY = 0, SLOT_RIGHT = 1, SLOT_WRONG = 2 };

typedef struct ht_slot {
    uint8_t digest[32];  // SHA-256(key, user length, user, password)
    uint32_t stamp;
    uint8_t state;
} ht_slot;

/// The userdata behind an htpasswd object. Scripts never see its metatable.
typedef struct moon_htpasswd {
    char *text;          // the names and hashes, each ended by a NUL byte
    ht_user *users;      // sorted by name
    int nusers;
    ht_slot *cache;      // CACHE_SETS * CACHE_WAYS
    uint32_t clock;
    int cached;          // slots in use
    lua_Integer hits, misses;
    uint8_t key[16];     // random: the cache's digests are of no use outside this object
    struct crypt_data *crypt;
    size_t charge;       // bytes added to the state's memory count, given back by __gc
} moon_htpasswd;

static int compare_users(const void *a, const void *b, void *text) {
    const ht_user *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp((char *)text + x->name_off, (char *)text + y->name_off, n);
    if (c != 0) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static const ht_user *find_user(const moon_htpasswd *h, const char *name, size_t len) {
    int lo = 0, hi = h->nusers - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const ht_user *u = &h->users[mid];
        size_t n = len < u->name_len ? len : u->name_len;
        int c = memcmp(name, h->text + u->name_off, n);
        if (c == 0) c = len < u->name_len ? -1 : len > u->name_len;
        if (c == 0) return u;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

static int htpasswd_gc(lua_State *L) {
    moon_htpasswd *h = luaL_checkudata(L, 1, HTPASSWD_META);
    free(h->text);
    free(h->users);
    free(h->cache);
    if (h->crypt != NULL) explicit_bzero(h->crypt, sizeof *h->crypt);
    free(h->crypt);
    h->text = NULL;
    h->users = NULL;
    h->cache = NULL;
    h->crypt = NULL;
    h->nusers = 0;
    moon_ctx *ctx = moon_ctx_of(L);
    ctx->used -= h->charge < ctx->used ? h->charge : ctx->used;
    h->charge = 0;
    return 0;
}

static int htpasswd_tostring(lua_State *L) {
    moon_htpasswd *h = luaL_checkudata(L, 1, HTPASSWD_META);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, HTPASSWD_META "(%s, %d users)", lua_tostring(L, -1), h->nusers);
    return 1;
}

// Counts `bytes` against the state's memory cap (the object's memory is C's, outside Lua's count).
static void charge_memory(lua_State *L, moon_htpasswd *h, size_t bytes) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->cap != 0 && (ctx->used > ctx->cap || bytes > ctx->cap - ctx->used)) {
        moon_raise(L, MOON_ERR_MEMORY, "moongate.htpasswd: memory cap of %d bytes exceeded (this file needs %d)",
                   (int)(ctx->cap > INT32_MAX ? INT32_MAX : ctx->cap), (int)(bytes > INT32_MAX ? INT32_MAX : bytes));
    }
    ctx->used += bytes;
    h->charge += bytes;
}

// Reads the lines of `bytes` into h->text and h->users (raising at the first bad line).
static void parse_lines(lua_State *L, moon_htpasswd *h, const char *path, const char *bytes, size_t len) {
    int lines = 1;
    for (size_t i = 0; i < len; i++) lines += bytes[i] == '\n';
    charge_memory(L, h, len + 2 * (size_t)lines + (size_t)lines * sizeof(ht_user));
    h->text = malloc(len + 2 * (size_t)lines + 1);
    h->users = malloc((size_t)lines * sizeof(ht_user));
    if (h->text == NULL || h->users == NULL) moon_raise(L, MOON_ERR_MEMORY, "moongate.htpasswd: out of memory");
    size_t used = 0;
    int line = 0;
    for (size_t start = 0; start < len;) {
        const char *p = bytes + start;
        const char *nl = memchr(p, '\n', len - start);
        size_t n = nl ? (size_t)(nl - p) : len - start;
        start += n + 1;
        line++;
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n == 0 || p[0] == '#') continue;
        const char *colon = memchr(p, ':', n);
        if (colon == NULL) moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: expected user:hash", path, line);
        size_t ulen = (size_t)(colon - p), hlen = n - ulen - 1;
        if (ulen == 0 || ulen > MAX_USER) {
            moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: a user name of 1 to %d bytes is needed", path, line, MAX_USER);
        }
        for (size_t i = 0; i < ulen; i++) {
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
                moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: the user name has a control character", path, line);
            }
        }
        ht_user *u = &h->users[h->nusers];
        const char *why = moon_hash_parse(colon + 1, hlen, &u->kind);
        if (why != NULL) moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: %s", path, line, why);
        u->name_off = (uint32_t)used;
        u->name_len = (uint32_t)ulen;
        memcpy(h->text + used, p, ulen);
        used += ulen;
        h->text[used++] = 0;
        u->hash_off = (uint32_t)used;
        u->hash_len = (uint32_t)hlen;
        memcpy(h->text + used, colon + 1, hlen);
        used += hlen;
        h->text[used++] = 0;
        u->line = line;
        h->nusers++;
    }
    if (h->nusers == 0) moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s: no users", path);
    qsort_r(h->users, (size_t)h->nusers, sizeof(ht_user), compare_users, h->text);
    for (int i = 1; i < h->nusers; i++) {
        if (compare_users(&h->users[i - 1], &h->users[i], h->text) == 0) {
            int a = h->users[i - 1].line, b = h->users[i].line;
            moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: user '%s' is already on line %d", path,
                       a > b ? a : b, h->text + h->users[i].name_off, a < b ? a : b);
        }
    }
}

// Estimates each hash's verification time; refuses the file when one is over the loading plugin's
// hook deadline (a cache miss would always fail).
static void check_costs(lua_State *L, moon_htpasswd *h, const char *path) {
    uint64_t deadline = moon_loading_plugin_deadline(L);
    for (int i = 0; i < h->nusers; i++) {
        ht_user *u = &h->users[i];
        u->cost_ns = moon_hash_cost_ns(u->kind);
        const char *method = moon_hash_method_name(u->kind.method);
        if (u->cost_ns == 0) {
            moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: %s:%d: this system's crypt(3) does not support %s", path,
                       u->line, method);
        }
        if (deadline != 0 && u->cost_ns > deadline) {
            uint64_t ms = (u->cost_ns + 999999) / 1000000, suggest = ((4 * ms + 9) / 10) * 10;
            moon_raise(L, MOON_ERR_RUNTIME,
                       "moongate.htpasswd: %s:%d: a %s hash (%s %d) takes about %d ms to verify here, longer than this "
                       "plugin's hook deadline of %d ms: give the plugin's entry hook_deadline: %dms (a password not "
                       "in the cache holds its event loop that long), or use a cheaper hash",
                       path, u->line, method, u->kind.method == MOON_HASH_BCRYPT ? "cost" : "rounds", (int)u->kind.work,
                       (int)(ms > INT32_MAX ? INT32_MAX : ms), (int)((deadline + 999999) / 1000000),
                       (int)(suggest > INT32_MAX ? INT32_MAX : suggest));
        }
    }
}

// moongate.htpasswd(path)
static int htpasswd_new(lua_State *L) {
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->in_call) {
        return moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: load users when the plugin loads (its module body or init), not in a hook");
    }
    if (plen == 0 || plen >= MAX_PATH || memchr(path, 0, plen) != NULL) {
        return luaL_argerror(L, 1, "a file path of 1 to 4095 bytes");
    }
    moon_htpasswd *h = lua_newuserdatauv(L, sizeof(moon_htpasswd), 1);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, HTPASSWD_META);  // from here __gc frees whatever was allocated
    char resolved[MAX_PATH + 512], err[256];
    size_t len = 0;
    const char *bytes = moon_data_file(L, path, resolved, sizeof resolved, &len, err, sizeof err);
    if (bytes == NULL) return moon_raise(L, MOON_ERR_RUNTIME, "moongate.htpasswd: cannot read %s: %s", resolved, err);
    lua_pushstring(L, resolved);
    lua_setiuservalue(L, -2, 1);
    moon_deadline_poll(L);
    parse_lines(L, h, resolved, bytes, len);
    check_costs(L, h, resolved);
    charge_memory(L, h, sizeof(ht_slot) * CACHE_SETS * CACHE_WAYS + sizeof(struct crypt_data));
    h->cache = calloc(CACHE_SETS * CACHE_WAYS, sizeof(ht_slot));
    h->crypt = calloc(1, sizeof(struct crypt_data));
    if (h->cache == NULL || h->crypt == NULL) return moon_raise(L, MOON_ERR_MEMORY, "moongate.htpasswd: out of memory");
    if (getrandom(h->key, sizeof h->key, 0) != (ssize_t)sizeof h->key) {
        uint64_t now = moon_now_ns();  // no entropy: the key only hides digests that never leave memory
        memcpy(h->key, &now, sizeof now);
        memcpy(h->key + 8, &h, sizeof h < 8 ? sizeof h : 8);
    }
    return 1;
}

// The cache slot of a credential: a hit, or the slot to fill (an empty or the least recently used).
static ht_slot *lookup(moon_htpasswd *h, const uint8_t digest[32], int *hit) {
    ht_slot *set = &h->cache[(size_t)digest[0] * CACHE_WAYS];
    ht_slot *victim = &set[0];
    for (int i = 0; i < CACHE_WAYS; i++) {
        if (set[i].state != SLOT_EMPTY && memcmp(set[i].digest, digest, 32) == 0) {
            *hit = 1;
            return &set[i];
        }
        if (set[i].state == SLOT_EMPTY || (victim->state != SLOT_EMPTY && set[i].stamp < victim->stamp)) victim = &set[i];
    }
    *hit = 0;
    return victim;
}

// users:check(user, password) -> boolean
static int htpasswd_check(lua_State *L) {
    moon_htpasswd *h = luaL_checkudata(L, 1, HTPASSWD_META);
    size_t ulen, plen;
    const char *user = luaL_checklstring(L, 2, &ulen);
    const char *password = luaL_checklstring(L, 3, &plen);
    if (h->cache == NULL) return luaL_argerror(L, 1, "htpasswd object is not loaded");
    const ht_user *u = find_user(h, user, ulen);
    if (u == NULL || plen > MAX_PASSWORD || memchr(password, 0, plen) != NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    uint8_t input[sizeof h->key + 4 + MAX_USER + MAX_PASSWORD], digest[32];
    size_t n = 0;
    memcpy(input, h->key, sizeof h->key);
    n += sizeof h->key;
    for (int i = 0; i < 4; i++) input[n++] = (uint8_t)(ulen >> (8 * i));
    memcpy(input + n, user, ulen);
    n += ulen;
    memcpy(input + n, password, plen);
    n += plen;
    moon_sha256(input, n, digest);
    explicit_bzero(input, n);
    int hit;
    ht_slot *slot = lookup(h, digest, &hit);
    if (hit) {
        h->hits++;
        slot->stamp = ++h->clock;
        lua_pushboolean(L, slot->state == SLOT_RIGHT);
        return 1;
    }
    // A miss: crypt(3) cannot be interrupted, so it runs only if it fits in what is left of the deadline.
    moon_ctx *ctx = moon_ctx_of(L);
    moon_deadline_poll(L);
    if (ctx->deadline_ns != 0) {
        uint64_t spent = ctx->call_start_ns ? moon_now_ns() - ctx->call_start_ns : 0;
        uint64_t left = spent < ctx->deadline_ns ? ctx->deadline_ns - spent : 0;
        if (u->cost_ns > left) {
            return moon_raise(L, MOON_ERR_DEADLINE,
                              "moongate.htpasswd: a %s verification takes about %d ms here, more than the %d ms left "
                              "of this hook's deadline of %d ms (raise the plugin's hook_deadline)",
                              moon_hash_method_name(u->kind.method), (int)((u->cost_ns + 999999) / 1000000),
                              (int)(left / 1000000), (int)((ctx->deadline_ns + 999999) / 1000000));
        }
    }
    h->misses++;
    const char *hash = h->text + u->hash_off;
    const char *out = crypt_rn(password, hash, h->crypt, (int)sizeof *h->crypt);
    int right = 0;
    if (out != NULL && strlen(out) == u->hash_len) {
        unsigned char diff = 0;
        for (size_t i = 0; i < u->hash_len; i++) diff |= (unsigned char)(out[i] ^ hash[i]);
        right = diff == 0;
    }
    if (slot->state == SLOT_EMPTY) h->cached++;
    memcpy(slot->digest, digest, sizeof digest);
    slot->state = right ? SLOT_RIGHT : SLOT_WRONG;
    slot->stamp = ++h->clock;
    moon_deadline_poll(L);
    lua_pushboolean(L, right);
    return 1;
}

// users:stats() -> { users, cached, hits, misses }: the users of the file, the credentials in the
// cache, and the checks of known users answered from it or by crypt(3).
static int htpasswd_stats(lua_State *L) {
    moon_htpasswd *h = luaL_checkudata(L, 1, HTPASSWD_META);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, h->nusers);
    lua_setfield(L, -2, "users");
    lua_pushinteger(L, h->cached);
    lua_setfield(L, -2, "cached");
    lua_pushinteger(L, h->hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, h->misses);
    lua_setfield(L, -2, "misses");
    return 1;
}

void moon_install_htpasswd(lua_State *L, int moongate_table) {
    static const luaL_Reg methods[] = { { "check", htpasswd_check }, { "stats", htpasswd_stats }, { NULL, NULL } };
    moongate_table = lua_absindex(L, moongate_table);
    moon_register_meta(L, HTPASSWD_META, methods);
    lua_pushcfunction(L, htpasswd_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, htpasswd_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, htpasswd_new);
    lua_setfield(L, moongate_table, "htpasswd");
}
