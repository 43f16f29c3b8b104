// The Lua 5.4 pattern matcher behind the sandbox's string.find, match, gmatch and gsub (patterns.c):
// character classes and sets, captures, back-references, %b, %f, the backtracking matcher with its
// step count and depth limit, and plain-text search. See patterns.c for what it promises.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#include <ctype.h>
#include <string.h>
#include "patterns.h"

void pm_init(pm_state *ms, lua_State *L, const char *s, size_t len, const char *p, size_t plen) {
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
void pm_restart(pm_state *ms) {
    ms->ncap = 0;
    ms->depth = 0;
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
ptrdiff_t pm_capture_of(pm_state *ms, int i, size_t s, size_t e, size_t *start) {
    if (i >= ms->ncap) {
        if (i != 0) luaL_error(ms->L, "invalid capture index %%%d in replacement string", i + 1);
        *start = s;
        return (ptrdiff_t)(e - s);
    }
    if (ms->cap[i].len == PM_OPEN) luaL_error(ms->L, "unfinished capture");
    *start = ms->cap[i].start;
    return ms->cap[i].len;
}

void pm_push_capture(pm_state *ms, int i, size_t s, size_t e) {
    size_t start;
    ptrdiff_t len = pm_capture_of(ms, i, s, e, &start);
    if (len == PM_POSITION) lua_pushinteger(ms->L, (lua_Integer)start + 1);
    else lua_pushlstring(ms->L, (const char *)ms->subj + start, (size_t)len);
}

/// Pushes every capture of the match [s, e), or the match itself when the pattern has none and
/// `whole` is set. Returns how many values were pushed.
int pm_push_captures(pm_state *ms, size_t s, size_t e, int whole) {
    int n = ms->ncap == 0 && whole ? 1 : ms->ncap;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++) pm_push_capture(ms, i, s, e);
    return n;
}

// ---- the matcher ------------------------------------------------------------------------------


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
ptrdiff_t pm_match(pm_state *ms, size_t s, size_t p) {
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
int pm_is_plain(pm_state *ms, const char *p, size_t plen, int for_find) {
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
const char *pm_find_text(pm_state *ms, const char *hay, size_t hlen, const char *needle, size_t nlen) {
    if (nlen == 0) return hay;
    const char *hit = nlen > hlen ? NULL : memmem(hay, hlen, needle, nlen);
    size_t scanned = hit != NULL ? (size_t)(hit - hay) + nlen : hlen;
    pm_tick(ms, 1 + (lua_Integer)(scanned / PM_TEXT_BYTES_PER_STEP));
    return hit;
}

/// The 0-based offset where a search given the 1-based `init` starts (negative counts from the
/// end, and a position before the start is the start). May be past the end of the subject.
size_t pm_start(lua_Integer init, size_t len) {
    if (init > 0) return (size_t)init - 1;
    if (init == 0 || init < -(lua_Integer)len) return 0;
    return len - (size_t)(-init);
}
