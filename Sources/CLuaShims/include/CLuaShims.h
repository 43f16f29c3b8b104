// CLuaShims: the only code in Moongate that raises Lua errors.
//
// Swift never calls a Lua API that can raise (allocate under the memory cap, run a metamethod,
// throw). Every such step happens here, inside lua_pcall, and Swift sees plain status codes,
// error text copied into a C buffer, and pointer/length pairs into values kept alive on the stack.
// A Lua error is a longjmp: raised through a Swift frame it would skip Swift cleanup and corrupt state.
#ifndef MOONGATE_CLUA_SHIMS_H
#define MOONGATE_CLUA_SHIMS_H

#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;

// ---- status codes returned by every entry point -------------------------------------------------
enum {
    MOON_OK = 0,
    MOON_ERR_SYNTAX = 1,    // the chunk did not compile
    MOON_ERR_RUNTIME = 2,   // a Lua error was raised
    MOON_ERR_BUDGET = 3,    // the instruction budget ran out
    MOON_ERR_MEMORY = 4,    // the memory cap was hit
    MOON_ERR_INVALID = 5,   // the script returned a value that is not allowed
    MOON_ERR_DEADLINE = 6,  // the call ran past its CPU deadline (in Lua or in a library function)
};

// ---- decision verbs (what a hook returned) --------------------------------------------------------
enum {
    MOON_VERB_NONE = 0,
    MOON_VERB_ROUTE = 1,
    MOON_VERB_FORWARD = 2,
    MOON_VERB_TUNNEL = 3,
    MOON_VERB_TUNNEL_VIA = 4,
    MOON_VERB_DENY = 5,
    MOON_VERB_RESPOND = 6,
};

// ---- header edit operations -------------------------------------------------------------------------
enum { MOON_EDIT_REMOVE = 1, MOON_EDIT_SET = 2, MOON_EDIT_APPEND = 3 };

// ---- staged message fields (request and response views) --------------------------------------------
enum {
    MOON_F_METHOD = 0,
    MOON_F_SCHEME,
    MOON_F_AUTHORITY,
    MOON_F_HOST,
    MOON_F_PATH,
    MOON_F_QUERY,
    MOON_F_VERSION,
    MOON_F_PROTOCOL,
    MOON_F_UPGRADE,
    MOON_F_TARGET_HOST,
    MOON_F_CLIENT_IP,
    MOON_F_FORM,
    // The client's TLS session (req.client.tls); SANS holds the names separated by '\n'.
    MOON_F_TLS_VERSION,
    MOON_F_TLS_ALPN,
    MOON_F_TLS_SNI,
    MOON_F_TLS_CIPHER,
    MOON_F_TLS_SUBJECT,
    MOON_F_TLS_SANS,
    MOON_F_TLS_SHA256,
    MOON_F_COUNT
};

/// A finished hook call: the verb and its arguments. Strings point into Lua values that stay on the
/// stack until `moon_call_end`.
typedef struct moon_decision {
    int verb;
    int status;
    const char *arg;        // cluster (route, tunnel_via), reason (deny) or body (respond)
    size_t arg_len;
    int header_count;       // extra response headers, stored as MOON_EDIT_SET edits
    int tls;                // tunnel / tunnel_via with { tls = ... }: originate TLS toward the target
    int tls_verify;         // ... verifying its certificate (default 1)
    const char *tls_sni;    // ... with this SNI name (NULL: the target's host)
    size_t tls_sni_len;
} moon_decision;

// ---- state lifecycle ------------------------------------------------------------------------------------
/// A new Lua state with a capped allocator and the sandbox installed. NULL when malloc fails.
lua_State *moon_newstate(size_t mem_cap);
void moon_close(lua_State *L);
size_t moon_mem_used(lua_State *L);
void moon_set_mem_cap(lua_State *L, size_t cap);
/// Instructions allowed per call (0 = unlimited).
void moon_set_budget(lua_State *L, int instructions);
/// Time limits in nanoseconds (0 = none): `hook_ns` for each hook call (moon_call_hook), `load_ns` for
/// module bodies, `init` and other calls made while loading. A call that runs past its limit, in Lua
/// or inside a library function, ends with MOON_ERR_DEADLINE.
void moon_set_deadlines(lua_State *L, uint64_t hook_ns, uint64_t load_ns);
/// Runs a full garbage collection (protected).
void moon_full_gc(lua_State *L);
/// The last error message (valid until the next call on this state).
const char *moon_last_error(lua_State *L);

// ---- loading --------------------------------------------------------------------------------------------
/// Creates a fresh sandboxed environment table; `*env_ref` receives its registry reference.
int moon_new_env(lua_State *L, int *env_ref);
/// Compiles `src` as text (never bytecode) with `chunkname` ("@path" for files), binds it to the
/// environment and runs it; the first value it returns is stored in `*result_ref` (LUA_REFNIL if nil).
int moon_run_chunk(lua_State *L, int env_ref, const char *src, size_t len, const char *chunkname,
                   int *result_ref);
/// Reads field `name` of the table behind `table_ref`: a function gives a reference in `*fn_ref`,
/// nil gives -1, anything else is an error naming the field.
int moon_get_function(lua_State *L, int table_ref, const char *name, int *fn_ref);
/// Reads field `name` of the table behind `table_ref` as a reference (-1 when nil).
int moon_get_field(lua_State *L, int table_ref, const char *name, int *value_ref);
/// Calls the function behind `fn_ref` with the value behind `arg_ref` (-1 for none), result ignored.
int moon_call_with(lua_State *L, int fn_ref, int arg_ref);
/// Makes the environment read-only: later writes to a global raise an error naming the line.
int moon_freeze_env(lua_State *L, int env_ref);
/// Serialises the value behind `ref` as JSON into a malloc'd buffer (free with `moon_free`).
int moon_export_json(lua_State *L, int ref, char **out, size_t *out_len);
void moon_free(void *p);
void moon_unref(lua_State *L, int ref);

// ---- request / response staging (plain C, never raises) -------------------------------------------
void moon_req_reset(lua_State *L);
void moon_req_set(lua_State *L, int field, const char *p, size_t len);
void moon_req_set_ints(lua_State *L, int target_port, int port, int client_port, int tls);
/// Adds a header; the name is lower-cased while copied.
void moon_req_add_header(lua_State *L, const char *n, size_t nlen, const char *v, size_t vlen);
void moon_res_reset(lua_State *L, int status);
void moon_res_add_header(lua_State *L, const char *n, size_t nlen, const char *v, size_t vlen);

// ---- hook calls (the hot path) ------------------------------------------------------------------------
enum { MOON_HOOK_DECIDE = 0, MOON_HOOK_SANITIZE_REQUEST = 1, MOON_HOOK_SANITIZE_RESPONSE = 2, MOON_HOOK_LOG = 3 };
/// Calls a hook with the staged request (and, for sanitize hooks, the edit object; for the response
/// hooks, the staged response). On MOON_OK the decision is filled and its strings stay valid until
/// `moon_call_end`. Header edits accumulate until `moon_edits_clear`.
int moon_call_hook(lua_State *L, int fn_ref, int kind, moon_decision *out);
/// The same with this call's own deadline (a plugin's `hook_deadline`), in nanoseconds.
int moon_call_hook_within(lua_State *L, int fn_ref, int kind, uint64_t deadline_ns, moon_decision *out);
void moon_call_end(lua_State *L);

int moon_edits_count(lua_State *L);
int moon_edit_at(lua_State *L, int i, const char **name, size_t *nlen, const char **value, size_t *vlen);
void moon_edits_clear(lua_State *L);

/// The class of an IP literal ("loopback", "private", "linklocal", "cgnat", "metadata", "unspecified",
/// "multicast", "broadcast", "reserved", "public"), or NULL when the text is not an IP literal.
/// IPv4-mapped IPv6 literals are classed by their IPv4 address.
const char *moon_ip_class(const char *s, size_t len);

// ---- configured clusters (clusters.c) ------------------------------------------------------------------
/// Sets the cluster names policy may route to: `n` names, each ended by a NUL byte, in `names`, in the
/// order `moongate.clusters()` lists them. With n = 0 the list is unknown and nothing is checked;
/// otherwise `moongate.route(name)` and `moongate.tunnel_via(name)` with another name raise a fault
/// naming the script's file and line, and so does a hook that returns such a verb. Plain C, never raises.
void moon_set_clusters(lua_State *L, const char *names, size_t len, int n);

// ---- script log lines (log.c) ------------------------------------------------------------------------
/// `moongate.log` levels, in order of severity (`print` logs at MOON_LOG_DEBUG).
enum { MOON_LOG_DEBUG = 0, MOON_LOG_INFO = 1, MOON_LOG_NOTICE = 2, MOON_LOG_WARNING = 3, MOON_LOG_ERROR = 4 };
/// The kind of a logged field's value (its text is always given).
enum { MOON_FIELD_STRING = 0, MOON_FIELD_INTEGER = 1, MOON_FIELD_NUMBER = 2, MOON_FIELD_BOOLEAN = 3 };

/// One line a script logged, queued in C memory until Swift drains it after the call. Its strings stay
/// valid until `moon_log_clear`.
typedef struct moon_log_entry {
    int level;
    int plugin;             // the index given to moon_set_plugin when the line was logged
    int line;               // the calling script's line (0 when unknown)
    unsigned dropped;       // lines of this plugin dropped (rate limit, full queue) since its last line
    int truncated;          // the message or a field value was cut to its bound
    const char *file;       // the calling script's chunk name ("p.lua")
    size_t file_len;
    const char *message;    // control characters escaped (\n, \t, \xHH)
    size_t message_len;
    int field_count;
} moon_log_entry;

/// The plugin whose code runs next (its lines are rate-limited and named by this index). Never raises.
void moon_set_plugin(lua_State *L, int plugin);
/// Lines queued since the last `moon_log_clear` (by any call, including one that faulted).
int moon_log_count(lua_State *L);
void moon_log_entry_at(lua_State *L, int i, moon_log_entry *out);
/// Field `f` of line `i`: the key and the value's text; returns the value's MOON_FIELD_* kind.
int moon_log_field_at(lua_State *L, int i, int f, const char **key, size_t *klen, const char **value, size_t *vlen);
void moon_log_clear(lua_State *L);

// ---- data files plugins load (data_files.c; moongate.htpasswd) ---------------------------------------
/// The folder relative data-file paths are resolved against (the config file's; NULL or "." for the
/// working directory). Plain C, never raises.
void moon_set_data_folder(lua_State *L, const char *folder);
/// Gives the state its copy of the data file at `path` (as resolved): a plugin that loads it uses these
/// bytes and never reads the disk. Returns 0, or -1 when out of memory. Never raises.
int moon_preload_data_file(lua_State *L, const char *path, const char *bytes, size_t len);
/// The data files plugins of this state loaded (preloaded or read), and the `index`-th of them: its
/// resolved path and bytes, valid while the state lives. Returns 0 past the end.
int moon_data_file_count(lua_State *L);
int moon_data_file_at(lua_State *L, int index, const char **path, const char **bytes, size_t *len);
/// The hook deadline, in nanoseconds, of the plugin that loads next (0: the state's hook deadline):
/// `moongate.htpasswd` refuses hashes slower than it. Never raises.
void moon_set_plugin_deadline(lua_State *L, uint64_t ns);

// ---- Lua heap ---------------------------------------------------------------------------------------------
/// Bytes allocated by this state right now (the allocator's count).
size_t moon_heap_bytes(lua_State *L);

#endif
