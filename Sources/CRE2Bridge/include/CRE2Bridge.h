// CRE2Bridge: a plain C API over RE2 (Debian's libre2, the engine behind Envoy's safe_regex), for
// CLuaShims' `moongate.regex`. RE2 matches in time linear in the input: no backtracking, so a
// hostile request cannot make a policy script's regex run away.
//
// No C++ type and no C++ exception crosses this header: every function catches everything and
// reports it as a MOON_RE2_* status.
#ifndef MOONGATE_CRE2_BRIDGE_H
#define MOONGATE_CRE2_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A compiled regular expression (an RE2 object). Immutable once compiled.
typedef struct moon_re2 moon_re2;

/// Status codes.
enum {
    MOON_RE2_OK = 0,
    MOON_RE2_ERR_SYNTAX = 1,    // RE2 refused the pattern (its reason is in the error buffer)
    MOON_RE2_ERR_TOO_BIG = 2,   // the compiled program is over the caller's instruction limit
    MOON_RE2_ERR_NOMEM = 3,     // an allocation failed (std::bad_alloc)
    MOON_RE2_ERR_INTERNAL = 4,  // any other C++ exception, or a bad argument
};

/// Compile flags (OR them together).
enum {
    MOON_RE2_CASELESS = 1,  // case-insensitive (as if the pattern began with (?i))
    MOON_RE2_LATIN1 = 2,    // pattern and text are Latin-1 bytes; the default is UTF-8
};

/// Compiles `pattern` (`len` bytes, NUL bytes allowed) with RE2's Perl-like syntax.
///
/// RE2 never logs (`log_errors` is off); its program and DFA caches stay within `max_mem` bytes.
/// A pattern whose forward program (`RE2::ProgramSize()`) has more than `max_program_size`
/// instructions is refused ("regex program of N instructions is over the limit of M").
///
/// - Parameters:
///   - flags: `MOON_RE2_CASELESS` and/or `MOON_RE2_LATIN1`.
///   - max_mem: RE2's memory budget for this regex (`RE2::Options::set_max_mem`).
///   - out: receives the compiled regex on success (NULL on failure).
///   - err, err_cap: receive a NUL-terminated reason on failure (truncated to fit; may be NULL).
/// - Returns: `MOON_RE2_OK` or an error status.
int moon_re2_compile(const char *pattern, size_t len, int flags, int64_t max_mem, int max_program_size,
                     moon_re2 **out, char *err, size_t err_cap);

/// The number of capturing groups (not counting the whole match).
int moon_re2_groups(const moon_re2 *re);

/// The number of instructions of the forward program (`RE2::ProgramSize()`).
int moon_re2_program_size(const moon_re2 *re);

/// Searches `text[start..len)` for the leftmost match (unanchored; the bytes before `start` are
/// context, so `^` and `\b` see them as RE2's `Match(text, startpos, ...)` does).
///
/// - Parameters:
///   - text: the subject (`len` bytes); NULL is allowed when `len` is 0.
///   - start: the byte offset where the search begins (at most `len`).
///   - offsets: receives byte offsets into `text`: `[0]`, `[1]` the whole match's start and end
///     (end exclusive), then a start and end per capturing group, -1 for a group that did not take
///     part. May be NULL when `noffsets` is 0, which asks only whether there is a match (fastest).
///   - noffsets: the number of entries of `offsets` to fill: 0, or an even number up to
///     2 * (1 + `moon_re2_groups(re)`).
/// - Returns: 1 on a match, 0 on none, or `-MOON_RE2_ERR_*` on failure.
int moon_re2_match(const moon_re2 *re, const char *text, size_t len, size_t start, ptrdiff_t *offsets,
                   int noffsets);

/// Frees a compiled regex (NULL is allowed).
void moon_re2_free(moon_re2 *re);

#ifdef __cplusplus
}
#endif

#endif
