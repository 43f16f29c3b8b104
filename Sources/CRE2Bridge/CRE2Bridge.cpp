// The C API of CRE2Bridge.h over re2::RE2 (the 2022-06-01 API: re2::StringPiece, no abseil).
// Every entry point catches every exception: nothing thrown by RE2 or the C++ library reaches C.
#include "CRE2Bridge.h"

#include <re2/re2.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct moon_re2 {
    re2::RE2 re;
    int groups;

    moon_re2(const re2::StringPiece &pattern, const re2::RE2::Options &options)
        : re(pattern, options), groups(0) {}
};

namespace {

void put_error(char *err, size_t cap, const char *text) {
    if (err == nullptr || cap == 0) return;
    std::snprintf(err, cap, "%s", text);
}

}  // namespace

extern "C" int moon_re2_compile(const char *pattern, size_t len, int flags, int64_t max_mem,
                                int max_program_size, moon_re2 **out, char *err, size_t err_cap) {
    if (out == nullptr) return MOON_RE2_ERR_INTERNAL;
    *out = nullptr;
    put_error(err, err_cap, "");
    if (pattern == nullptr && len > 0) {
        put_error(err, err_cap, "no pattern");
        return MOON_RE2_ERR_INTERNAL;
    }
    moon_re2 *compiled = nullptr;
    try {
        re2::RE2::Options options;
        options.set_log_errors(false);
        options.set_encoding((flags & MOON_RE2_LATIN1) ? re2::RE2::Options::EncodingLatin1
                                                       : re2::RE2::Options::EncodingUTF8);
        options.set_case_sensitive((flags & MOON_RE2_CASELESS) == 0);
        options.set_max_mem(max_mem);
        compiled = new moon_re2(re2::StringPiece(pattern == nullptr ? "" : pattern, len), options);
        if (!compiled->re.ok()) {
            put_error(err, err_cap, compiled->re.error().c_str());
            delete compiled;
            return MOON_RE2_ERR_SYNTAX;
        }
        int size = compiled->re.ProgramSize();
        if (size > max_program_size) {
            if (err != nullptr && err_cap > 0) {
                std::snprintf(err, err_cap, "regex program of %d instructions is over the limit of %d", size,
                              max_program_size);
            }
            delete compiled;
            return MOON_RE2_ERR_TOO_BIG;
        }
        compiled->groups = compiled->re.NumberOfCapturingGroups();
        *out = compiled;
        return MOON_RE2_OK;
    } catch (const std::bad_alloc &) {
        delete compiled;
        put_error(err, err_cap, "out of memory while compiling the regex");
        return MOON_RE2_ERR_NOMEM;
    } catch (...) {
        delete compiled;
        put_error(err, err_cap, "internal error while compiling the regex");
        return MOON_RE2_ERR_INTERNAL;
    }
}

extern "C" int moon_re2_groups(const moon_re2 *re) { return re == nullptr ? 0 : re->groups; }

extern "C" int moon_re2_program_size(const moon_re2 *re) {
    if (re == nullptr) return 0;
    try {
        return re->re.ProgramSize();
    } catch (...) {
        return 0;
    }
}

extern "C" int moon_re2_match(const moon_re2 *re, const char *text, size_t len, size_t start,
                              ptrdiff_t *offsets, int noffsets) {
    if (re == nullptr || start > len || noffsets < 0 || noffsets % 2 != 0 ||
        noffsets > 2 * (re->groups + 1) || (noffsets > 0 && offsets == nullptr) || (text == nullptr && len > 0)) {
        return -MOON_RE2_ERR_INTERNAL;
    }
    // A non-NULL base even for an empty subject: RE2 reports a group that matched the empty string
    // with a non-NULL data pointer, and one that did not take part with NULL.
    const char *base = text == nullptr ? "" : text;
    try {
        int nsub = noffsets / 2;
        re2::StringPiece inline_sub[16];
        std::vector<re2::StringPiece> heap_sub;
        re2::StringPiece *sub = inline_sub;
        if (nsub > 16) {
            heap_sub.resize(static_cast<size_t>(nsub));
            sub = heap_sub.data();
        }
        if (!re->re.Match(re2::StringPiece(base, len), start, len, re2::RE2::UNANCHORED, nsub > 0 ? sub : nullptr,
                          nsub)) {
            return 0;
        }
        for (int i = 0; i < nsub; i++) {
            if (sub[i].data() == nullptr) {
                offsets[2 * i] = -1;
                offsets[2 * i + 1] = -1;
            } else {
                offsets[2 * i] = sub[i].data() - base;
                offsets[2 * i + 1] = offsets[2 * i] + static_cast<ptrdiff_t>(sub[i].size());
            }
        }
        return 1;
    } catch (const std::bad_alloc &) {
        return -MOON_RE2_ERR_NOMEM;
    } catch (...) {
        return -MOON_RE2_ERR_INTERNAL;
    }
}

extern "C" void moon_re2_free(moon_re2 *re) {
    try {
        delete re;
    } catch (...) {
        // ~RE2 does not throw; nothing may cross into C regardless.
    }
}
