// Private to CLuaShims: htpasswd files for moongate.htpasswd (htpasswd.c, htpasswd_format.c,
// data_files.c, sha256.c).
#ifndef MOONGATE_CLUA_SHIMS_HTPASSWD_H
#define MOONGATE_CLUA_SHIMS_HTPASSWD_H

#include <stddef.h>
#include <stdint.h>
#include "internal.h"

/// The largest data file a plugin may load (a million users of bcrypt hashes is ~70 MiB; this is a
/// policy file, not a user database).
#define MOON_DATA_FILE_MAX (4u << 20)

/// The hash methods an htpasswd line may use.
enum { MOON_HASH_BCRYPT = 0, MOON_HASH_SHA256 = 1, MOON_HASH_SHA512 = 2, MOON_HASH_METHODS = 3 };

/// What a hash says about itself: its method and its work factor.
typedef struct moon_hash_kind {
    int method;
    /// bcrypt: the cost (4..31, 2^cost rounds); SHA-crypt: the rounds (1,000..999,999,999).
    uint64_t work;
} moon_hash_kind;

/// Checks the syntax of a hash (`$2y$`/`$2b$` bcrypt, `$5$`/`$6$` SHA-crypt). Returns NULL and fills
/// `*kind` when it is one, else a short reason (which never quotes the hash).
const char *moon_hash_parse(const char *hash, size_t len, moon_hash_kind *kind);

/// The method's name ("bcrypt", "SHA-256-crypt", "SHA-512-crypt").
const char *moon_hash_method_name(int method);

/// How long one verification of a hash of this kind takes on this machine, in nanoseconds: the
/// method's cheapest setting is timed once per process (the fastest of a few runs), and the work
/// factor scales it. 0 when this system's crypt(3) does not support the method.
uint64_t moon_hash_cost_ns(moon_hash_kind kind);

/// SHA-256 of `len` bytes.
void moon_sha256(const void *data, size_t len, uint8_t out[32]);

/// The contents of data file `path` for this state: the copy the generation preloaded, else the file
/// read from disk now. `path` is resolved against the data folder first (into `resolved`). Either
/// way the file is recorded as used. Returns NULL with a reason in `err` when it cannot be read.
const char *moon_data_file(lua_State *L, const char *path, char *resolved, size_t cap, size_t *len, char *err,
                           size_t errcap);

/// The hook deadline of the plugin that is loading (moon_set_plugin_deadline), or the state's.
uint64_t moon_loading_plugin_deadline(lua_State *L);

#endif
