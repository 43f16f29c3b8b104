// The hash formats an htpasswd line may use, and what verifying one costs on this machine.
//
//   bcrypt         $2y$CC$ + 53 characters      (Apache's `htpasswd -B`; $2b$ is the same algorithm)
//   SHA-256-crypt  $5$[rounds=N$]salt$ + 43      (`openssl passwd -5`, `mkpasswd -m sha-256`)
//   SHA-512-crypt  $6$[rounds=N$]salt$ + 86      (`openssl passwd -6`, `mkpasswd -m sha-512`)
//
// MD5 ($apr1$, $1$), SHA-1 ({SHA}) and DES crypt are refused: they are fast enough to brute-force.
#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "htpasswd.h"

static int is_b64(char c) {
    return c == '.' || c == '/' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int all_b64(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!is_b64(p[i])) return 0;
    }
    return 1;
}

const char *moon_hash_method_name(int method) {
    switch (method) {
    case MOON_HASH_BCRYPT: return "bcrypt";
    case MOON_HASH_SHA256: return "SHA-256-crypt";
    default: return "SHA-512-crypt";
    }
}

static const char *parse_bcrypt(const char *h, size_t len, moon_hash_kind *kind) {
    // $2y$CC$ then 22 characters of salt and 31 of hash
    if (len != 60 || h[6] != '$' || h[4] < '0' || h[4] > '9' || h[5] < '0' || h[5] > '9') {
        return "not a bcrypt hash ($2y$CC$ and 53 characters)";
    }
    int cost = (h[4] - '0') * 10 + (h[5] - '0');
    if (cost < 4 || cost > 31) return "bcrypt cost outside 04..31";
    if (!all_b64(h + 7, 53)) return "not a bcrypt hash (a character outside ./0-9A-Za-z)";
    kind->method = MOON_HASH_BCRYPT;
    kind->work = (uint64_t)cost;
    return NULL;
}

static const char *parse_sha(const char *h, size_t len, int method, moon_hash_kind *kind) {
    const char *p = h + 3, *end = h + len;
    uint64_t rounds = 5000;
    if ((size_t)(end - p) > 7 && memcmp(p, "rounds=", 7) == 0) {
        p += 7;
        uint64_t n = 0;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9' && digits < 10) {
            n = n * 10 + (uint64_t)(*p++ - '0');
            digits++;
        }
        if (digits == 0 || p == end || *p != '$') return "SHA-crypt rounds=N$ is malformed";
        if (n < 1000 || n > 999999999) return "SHA-crypt rounds outside 1000..999999999";
        rounds = n;
        p++;
    }
    const char *salt = p;
    while (p < end && *p != '$') {
        if ((unsigned char)*p <= 0x20 || *p == ':' || (unsigned char)*p >= 0x7f) return "SHA-crypt salt has a bad character";
        p++;
    }
    size_t salt_len = (size_t)(p - salt), want = method == MOON_HASH_SHA256 ? 43 : 86;
    if (p == end || salt_len == 0 || salt_len > 16) return "SHA-crypt salt missing or over 16 characters";
    p++;
    if ((size_t)(end - p) != want || !all_b64(p, want)) {
        return method == MOON_HASH_SHA256 ? "not a SHA-256-crypt hash (43 characters after the salt)"
                                          : "not a SHA-512-crypt hash (86 characters after the salt)";
    }
    kind->method = method;
    kind->work = rounds;
    return NULL;
}

const char *moon_hash_parse(const char *h, size_t len, moon_hash_kind *kind) {
    if (len >= 4 && (memcmp(h, "$2y$", 4) == 0 || memcmp(h, "$2b$", 4) == 0)) return parse_bcrypt(h, len, kind);
    if (len >= 3 && memcmp(h, "$5$", 3) == 0) return parse_sha(h, len, MOON_HASH_SHA256, kind);
    if (len >= 3 && memcmp(h, "$6$", 3) == 0) return parse_sha(h, len, MOON_HASH_SHA512, kind);
    if (len >= 6 && memcmp(h, "$apr1$", 6) == 0) return "MD5 ($apr1$) is not accepted: use bcrypt (htpasswd -B) or SHA-crypt";
    if (len >= 3 && memcmp(h, "$1$", 3) == 0) return "MD5-crypt ($1$) is not accepted: use bcrypt or SHA-crypt";
    if (len >= 5 && memcmp(h, "{SHA}", 5) == 0) return "SHA-1 ({SHA}) is not accepted: use bcrypt or SHA-crypt";
    if (len >= 4 && memcmp(h, "$2a$", 4) == 0) return "$2a$ bcrypt is not accepted: re-hash as $2y$ or $2b$";
    return "not a bcrypt ($2y$, $2b$) or SHA-crypt ($5$, $6$) hash";
}

// The cheapest setting of each method, timed once per process.
static pthread_mutex_t base_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t base_ns[MOON_HASH_METHODS];   // 0: not measured yet
static int base_missing[MOON_HASH_METHODS];   // crypt(3) does not support the method here
#define BASE_RUNS 5

static uint64_t measure(int method) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    switch (method) {
    case MOON_HASH_BCRYPT:
        if (crypt_gensalt_rn("$2b$", 4, NULL, 0, setting, sizeof setting) == NULL) return 0;
        break;
    case MOON_HASH_SHA256: strcpy(setting, "$5$rounds=1000$moongatemoongate"); break;
    default: strcpy(setting, "$6$rounds=1000$moongatemoongate"); break;
    }
    struct crypt_data *data = calloc(1, sizeof *data);
    if (data == NULL) return 0;
    uint64_t best = 0;
    for (int i = 0; i < BASE_RUNS; i++) {
        uint64_t start = moon_now_ns();
        const char *out = crypt_rn("moongate", setting, data, (int)sizeof *data);
        uint64_t took = moon_now_ns() - start;
        if (out == NULL || out[0] == '*') {
            best = 0;
            break;
        }
        if (best == 0 || took < best) best = took;
    }
    free(data);
    return best;
}

uint64_t moon_hash_cost_ns(moon_hash_kind kind) {
    pthread_mutex_lock(&base_lock);
    if (base_ns[kind.method] == 0 && !base_missing[kind.method]) {
        uint64_t took = measure(kind.method);
        if (took == 0) base_missing[kind.method] = 1;
        else base_ns[kind.method] = took;
    }
    uint64_t base = base_ns[kind.method];
    pthread_mutex_unlock(&base_lock);
    if (base == 0) return 0;
    if (kind.method == MOON_HASH_BCRYPT) {
        int shift = (int)kind.work - 4;
        return base > (UINT64_MAX >> shift) ? UINT64_MAX : base << shift;
    }
    return base * (kind.work / 1000) + base * (kind.work % 1000) / 1000;
}
