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
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#include <ctype.h>
#include <string.h>
#include "internal.h"

enum {
    PM_MAX_CAPTURES = 32,
    PM_MAX_DEPTH = 200,
    PM_POLL_EVERY = 1024,
    // Linear work outside the matcher (memmem, the plain-text check, copying a replacement string)
    // counts as one step per this many bytes.
    PM_TEXT_BYTES_PER_STEP = 16,
};

/// What the matcher returns when the pattern does not match here.
#define PM_FAIL ((ptrdiff_t)-1)
/// Capture lengths that are not lengths: still open, or a position capture `()`.
#define PM_OPEN ((ptrdiff_t)-1)
#define PM_POSITION ((ptrdiff_t)-2)

typedef struct pm_cap {
    size_t start;  // offset in the subject
    ptrdiff_t len; // >= 0 once closed, else PM_OPEN or PM_POSITION
} pm_cap;

typedef struct pm_state {
    lua_State *L;
    const unsigned char *subj;
    size_t subj_len;
    const unsigned char *pat;
    size_t pat_len;
    int ncap;           // captures opened so far in this attempt
    int depth;          // nested pm_match calls
    lua_Integer ticks;  // steps left before the next deadline poll
    pm_cap cap[PM_MAX_CAPTURES];
} pm_state;

static void pm_init(pm_state *ms, lua_State *L, const char *s, size_t len, const char *p, size_t plen) {
    ms->L = L;
    ms->subj = (const unsigned char *)s;
    ms->subj_len = len;
    ms->pat = (const unsigned char *)p;
    ms->pat_len = plen;
    ms->ncap = 0;
    ms->depth = 0;
    ms->ticks = PM_POLL_EVERY;
}

/// Forgets the previous attempt's captures before trying at a new subject offset.
static void pm_restart(pm_state *ms) {
    ms->ncap = 0;
    ms->depth = 0;
}

/// Spends `n` steps; polls the deadline (which may raise) each time PM_POLL_EVERY have gone by.
static inline void pm_tick(pm_state *ms, lua_Integer n) {
    ms->ticks -= n;
    if (ms->ticks <= 0) {
        ms->ticks = PM_POLL_EVERY;
        moon_deadline_poll(ms->L);
    }
}

/// The pattern byte at `i`, or 0 past its end.
static inline unsigned char pm_pat(const pm_state *ms, size_t i) {
    return i < ms->pat_len ? ms->pat[i] : 0;
}

// ---- single-character classes -----------------------------------------------------------------

/// Whether byte `c` belongs to `%letter`. Lower-case class letters name a class, upper-case ones
/// its complement; any other byte after '%' stands for itself.
static int pm_in_class(int c, int letter) {
    int yes;
    switch (tolower(letter)) {
    case 'a': yes = isalpha(c); break;
    case 'c': yes = iscntrl(c); break;
    case 'd': yes = isdigit(c); break;
    case 'g': yes = isgraph(c); break;
    case 'l': yes = islower(c); break;
    case 'p': yes = ispunct(c); break;
    case 's': yes = isspace(c); break;
    case 'u': yes = isupper(c); break;
    case 'w': yes = isalnum(c); break;
    case 'x': yes = isxdigit(c); break;
    case 'z': yes = c == 0; break;  // not in the 5.4 manual, but stock 5.4 still accepts it
    default: return c == letter;
    }
    return isupper(letter) ? !yes : yes != 0;
}

/// Whether byte `c` belongs to the set written from pat[open] ('[') to pat[close] (its ']').
/// Members are "%x" classes, "a-z" ranges (a '-' first or last is literal) and single bytes.
static int pm_in_set(const pm_state *ms, int c, size_t open, size_t close) {
    const unsigned char *p = ms->pat;
    size_t i = open + 1;
    int inside = 1;  // what a member matching `c` means
    if (p[i] == '^') {
        inside = 0;
        i++;
    }
    while (i < close) {
        if (p[i] == '%') {
            if (pm_in_class(c, p[i + 1])) return inside;
            i += 2;
        } else if (p[i + 1] == '-' && i + 2 < close) {
            if (p[i] <= c && c <= p[i + 2]) return inside;
            i += 3;
        } else {
            if (p[i] == c) return inside;
            i++;
        }
    }
    return !inside;
}

/// The offset just past the set starting at pat[i] ('['). A ']' right after "[" or "[^" is a member,
/// not the end of the set.
static size_t pm_set_end(pm_state *ms, size_t i) {
    i++;
    if (pm_pat(ms, i) == '^') i++;
    size_t first = i;
    for (;;) {
        if (i >= ms->pat_len) luaL_error(ms->L, "malformed pattern (missing ']')");
        if (ms->pat[i] == ']' && i > first) return i + 1;
        i += ms->pat[i] == '%' ? 2 : 1;
    }
}

/// The offset just past the single-character class starting at pat[i]: ".", "%x", "[set]" or one
/// plain byte.
static inline size_t pm_class_end(pm_state *ms, size_t i) {
    switch (ms->pat[i]) {
    case '%':
        if (i + 1 >= ms->pat_len) luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return i + 2;
    case '[': return pm_set_end(ms, i);
    default: return i + 1;
    }
}

/// Whether the class pat[item .. end) matches the subject byte at `s` (never past the end).
static inline int pm_class_at(pm_state *ms, size_t s, size_t item, size_t end) {
    if (s >= ms->subj_len) return 0;
    pm_tick(ms, 1);
    int c = ms->subj[s];
    switch (ms->pat[item]) {
    case '.': return 1;
    case '%': return pm_in_class(c, ms->pat[item + 1]);
    case '[': return pm_in_set(ms, c, item, end - 1);
    default: return ms->pat[item] == c;
    }
}

// ---- captures ---------------------------------------------------------------------------------

/// Capture `i` of a finished match [s, e): sets `*start` and returns its length, or PM_POSITION.
/// Index 0 with no captures at all means the whole match.
static ptrdiff_t pm_capture_of(pm_state *ms, int i, size_t s, size_t e, size_t *start) {
    if (i >= ms->ncap) {
        if (i != 0) luaL_error(ms->L, "invalid capture index %%%d in replacement string", i + 1);
        *start = s;
        return (ptrdiff_t)(e - s);
    }
    if (ms->cap[i].len == PM_OPEN) luaL_error(ms->L, "unfinished capture");
    *start = ms->cap[i].start;
    return ms->cap[i].len;
}

static void pm_push_capture(pm_state *ms, int i, size_t s, size_t e) {
    size_t start;
    ptrdiff_t len = pm_capture_of(ms, i, s, e, &start);
    if (len == PM_POSITION) lua_pushinteger(ms->L, (lua_Integer)start + 1);
    else lua_pushlstring(ms->L, (const char *)ms->subj + start, (size_t)len);
}

/// Pushes every capture of the match [s, e), or the match itself when the pattern has none and
/// `whole` is set. Returns how many values were pushed.
static int pm_push_captures(pm_state *ms, size_t s, size_t e, int whole) {
    int n = ms->ncap == 0 && whole ? 1 : ms->ncap;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++) pm_push_capture(ms, i, s, e);
    return n;
}

// ---- the matcher ------------------------------------------------------------------------------

static ptrdiff_t pm_match(pm_state *ms, size_t s, size_t p);

/// "(" or "()": opens capture number ncap at `s` and matches the rest of the pattern.
static ptrdiff_t pm_open(pm_state *ms, size_t s, size_t p, ptrdiff_t kind) {
    if (ms->ncap >= PM_MAX_CAPTURES) luaL_error(ms->L, "too many captures (at most %d)", PM_MAX_CAPTURES);
    pm_cap *c = &ms->cap[ms->ncap++];
    c->start = s;
    c->len = kind;
    ptrdiff_t r = pm_match(ms, s, p);
    if (r == PM_FAIL) ms->ncap--;
    return r;
}

/// ")": closes the innermost capture still open and matches the rest of the pattern.
static ptrdiff_t pm_close(pm_state *ms, size_t s, size_t p) {
    int k = ms->ncap - 1;
    while (k >= 0 && ms->cap[k].len != PM_OPEN) k--;
    if (k < 0) luaL_error(ms->L, "malformed pattern (')' without an open capture)");
    ms->cap[k].len = (ptrdiff_t)(s - ms->cap[k].start);
    ptrdiff_t r = pm_match(ms, s, p);
    if (r == PM_FAIL) ms->cap[k].len = PM_OPEN;
    return r;
}

/// "%1".."%9": the text of an earlier, closed capture again at `s`. A position capture has no
/// text and never matches.
static ptrdiff_t pm_backref(pm_state *ms, size_t s, unsigned char digit) {
    int k = digit - '1';
    if (k < 0 || k >= ms->ncap || ms->cap[k].len == PM_OPEN) {
        luaL_error(ms->L, "invalid capture index %%%d in pattern", k + 1);
    }
    ptrdiff_t len = ms->cap[k].len;
    if (len == PM_POSITION) return PM_FAIL;
    pm_tick(ms, 1 + (lua_Integer)len);
    if (ms->subj_len - s < (size_t)len) return PM_FAIL;
    if (memcmp(ms->subj + ms->cap[k].start, ms->subj + s, (size_t)len) != 0) return PM_FAIL;
    return (ptrdiff_t)(s + (size_t)len);
}

/// "%bxy" (pat[p] is x): from an x at `s` to the y that balances it.
static ptrdiff_t pm_balanced(pm_state *ms, size_t s, size_t p) {
    if (p + 1 >= ms->pat_len) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    unsigned char open = ms->pat[p], close = ms->pat[p + 1];
    if (s >= ms->subj_len || ms->subj[s] != open) return PM_FAIL;
    size_t level = 1;
    for (size_t i = s + 1; i < ms->subj_len; i++) {
        pm_tick(ms, 1);
        unsigned char c = ms->subj[i];
        if (c == close) {
            if (--level == 0) return (ptrdiff_t)(i + 1);
        } else if (c == open) {
            level++;
        }
    }
    return PM_FAIL;
}

/// "x*" (from `s`) and "x+" (from one past the first x): takes every x it can, then gives them back
/// one at a time until the rest of the pattern matches.
static ptrdiff_t pm_greedy(pm_state *ms, size_t s, size_t item, size_t end) {
    size_t n = 0;
    while (pm_class_at(ms, s + n, item, end)) n++;
    for (;;) {
        ptrdiff_t r = pm_match(ms, s + n, end + 1);
        if (r != PM_FAIL || n == 0) return r;
        n--;
    }
}

/// "x-": tries the rest of the pattern first, then one more x at a time.
static ptrdiff_t pm_lazy(pm_state *ms, size_t s, size_t item, size_t end) {
    for (;;) {
        ptrdiff_t r = pm_match(ms, s, end + 1);
        if (r != PM_FAIL) return r;
        if (!pm_class_at(ms, s, item, end)) return PM_FAIL;
        s++;
    }
}

/// Matches pat[p..] at subject offset `s`; returns where the match ends, or PM_FAIL. Items that
/// cannot backtrack are consumed in this loop; the others recurse through pm_match.
static ptrdiff_t pm_items(pm_state *ms, size_t s, size_t p) {
    for (;;) {
        if (p >= ms->pat_len) return (ptrdiff_t)s;
        unsigned char c = ms->pat[p];
        if (c == '(') {
            if (pm_pat(ms, p + 1) == ')') return pm_open(ms, s, p + 2, PM_POSITION);
            return pm_open(ms, s, p + 1, PM_OPEN);
        }
        if (c == ')') return pm_close(ms, s, p + 1);
        if (c == '$' && p + 1 == ms->pat_len) return s == ms->subj_len ? (ptrdiff_t)s : PM_FAIL;
        if (c == '%') {
            unsigned char d = pm_pat(ms, p + 1);
            if (d == 'b') {
                ptrdiff_t e = pm_balanced(ms, s, p + 2);
                if (e == PM_FAIL) return PM_FAIL;
                s = (size_t)e;
                p += 4;
                continue;
            }
            if (d == 'f') {
                // Frontier: the byte before `s` (0 at the start) is outside the set, the byte at
                // `s` (0 at the end) inside it.
                p += 2;
                if (pm_pat(ms, p) != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                size_t end = pm_set_end(ms, p);
                int before = s > 0 ? ms->subj[s - 1] : 0;
                int here = s < ms->subj_len ? ms->subj[s] : 0;
                pm_tick(ms, 1);
                if (pm_in_set(ms, before, p, end - 1) || !pm_in_set(ms, here, p, end - 1)) return PM_FAIL;
                p = end;
                continue;
            }
            if (d >= '0' && d <= '9') {
                ptrdiff_t e = pm_backref(ms, s, d);
                if (e == PM_FAIL) return PM_FAIL;
                s = (size_t)e;
                p += 2;
                continue;
            }
        }
        // A single-character class, maybe followed by a quantifier.
        size_t end = pm_class_end(ms, p);
        int hit = pm_class_at(ms, s, p, end);
        switch (pm_pat(ms, end)) {
        case '?':
            if (hit) {
                ptrdiff_t r = pm_match(ms, s + 1, end + 1);
                if (r != PM_FAIL) return r;
            }
            p = end + 1;
            continue;
        case '*':
            if (hit) return pm_greedy(ms, s, p, end);
            p = end + 1;
            continue;
        case '+':
            return hit ? pm_greedy(ms, s + 1, p, end) : PM_FAIL;
        case '-':
            if (hit) return pm_lazy(ms, s, p, end);
            p = end + 1;
            continue;
        default:
            if (!hit) return PM_FAIL;
            s++;
            p = end;
            continue;
        }
    }
}

/// One nested attempt: counted against the depth limit and as a step.
static ptrdiff_t pm_match(pm_state *ms, size_t s, size_t p) {
    if (++ms->depth > PM_MAX_DEPTH) luaL_error(ms->L, "pattern too complex");
    pm_tick(ms, 1);
    ptrdiff_t r = pm_items(ms, s, p);
    ms->depth--;
    return r;
}

// ---- plain text -------------------------------------------------------------------------------

/// Whether the pattern is plain text: none of the bytes string.find treats as special
/// (^ $ * + ? . ( [ % -), and, unless `for_find`, no ')' either (match, gmatch and gsub run every
/// pattern with specials through the matcher, which reads a ')' as closing a capture).
static int pm_is_plain(pm_state *ms, const char *p, size_t plen, int for_find) {
    pm_tick(ms, 1 + (lua_Integer)(plen / PM_TEXT_BYTES_PER_STEP));
    for (size_t i = 0; i < plen; i++) {
        switch (p[i]) {
        case '^': case '$': case '*': case '+': case '?': case '.': case '(': case '[': case '%': case '-':
            return 0;
        case ')':
            if (!for_find) return 0;
            break;
        default:
            break;
        }
    }
    return 1;
}

/// The first occurrence of needle in hay (the empty needle is at the start), or NULL. Charges the
/// bytes memmem scanned as steps.
static const char *pm_find_text(pm_state *ms, const char *hay, size_t hlen, const char *needle, size_t nlen) {
    if (nlen == 0) return hay;
    const char *hit = nlen > hlen ? NULL : memmem(hay, hlen, needle, nlen);
    size_t scanned = hit != NULL ? (size_t)(hit - hay) + nlen : hlen;
    pm_tick(ms, 1 + (lua_Integer)(scanned / PM_TEXT_BYTES_PER_STEP));
    return hit;
}

/// The 0-based offset where a search given the 1-based `init` starts (negative counts from the
/// end, and a position before the start is the start). May be past the end of the subject.
static size_t pm_start(lua_Integer init, size_t len) {
    if (init > 0) return (size_t)init - 1;
    if (init == 0 || init < -(lua_Integer)len) return 0;
    return len - (size_t)(-init);
}

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
