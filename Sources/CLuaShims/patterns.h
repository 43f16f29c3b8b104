// Private to CLuaShims: the Lua-pattern matcher's state and entry points, shared by the matcher
// (pattern_matcher.c) and the library functions built on it (patterns.c).
#ifndef MOONGATE_PATTERNS_H
#define MOONGATE_PATTERNS_H

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

/// Spends `n` steps; polls the deadline (which may raise) each time PM_POLL_EVERY have gone by.
static inline void pm_tick(pm_state *ms, lua_Integer n) {
    ms->ticks -= n;
    if (ms->ticks <= 0) {
        ms->ticks = PM_POLL_EVERY;
        moon_deadline_poll(ms->L);
    }
}

void pm_init(pm_state *ms, lua_State *L, const char *s, size_t len, const char *p, size_t plen);
void pm_restart(pm_state *ms);
ptrdiff_t pm_capture_of(pm_state *ms, int i, size_t s, size_t e, size_t *start);
void pm_push_capture(pm_state *ms, int i, size_t s, size_t e);
int pm_push_captures(pm_state *ms, size_t s, size_t e, int whole);
ptrdiff_t pm_match(pm_state *ms, size_t s, size_t p);

int pm_is_plain(pm_state *ms, const char *p, size_t plen, int for_find);
const char *pm_find_text(pm_state *ms, const char *hay, size_t hlen, const char *needle, size_t nlen);
size_t pm_start(lua_Integer init, size_t len);

#endif
