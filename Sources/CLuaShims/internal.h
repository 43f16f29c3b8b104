// Private to CLuaShims: the per-state context and helpers shared by the C files.
#ifndef MOONGATE_CLUA_SHIMS_INTERNAL_H
#define MOONGATE_CLUA_SHIMS_INTERNAL_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdint.h>
#include "CLuaShims.h"

#define MOON_ABSENT UINT32_MAX
#define MOON_MAX_HEADERS 256
#define MOON_MAX_EDITS 128
#define MOON_MAX_NAME 256
#define MOON_MAX_VALUE 8192
#define MOON_MAX_BODY 65536
#define MOON_ERRBUF 1024
#define MOON_MAX_LOAD (64 * 1024)  // the longest source `load` compiles inside a hook

/// A byte range inside a staging arena.
typedef struct moon_span { uint32_t off, len; } moon_span;

/// A growable byte arena owned by C (malloc), never by the Lua allocator.
typedef struct moon_arena { char *bytes; size_t used, cap; } moon_arena;

/// One staged HTTP message (request or response) that the view userdata reads lazily.
typedef struct moon_msg {
    moon_arena arena;
    moon_span fields[MOON_F_COUNT];
    moon_span names[MOON_MAX_HEADERS];
    moon_span values[MOON_MAX_HEADERS];
    int nheaders;
    int status;
    int target_port, port, client_port, tls;
} moon_msg;

typedef struct moon_edit { int op; moon_span name, value; } moon_edit;

/// Everything a state needs beyond lua_State: the allocator's count, the budget, the staged views.
typedef struct moon_ctx {
    lua_State *L;
    size_t used, cap;
    int budget;           // instructions per call (0 = unlimited)
    int budget_left;      // instructions left in the running call
    int hook_period;      // the count the instruction hook is armed with
    int budget_hit;
    int deadline_hit;
    int mem_hit;          // a growing allocation was refused (cleared by one that succeeds after it)
    int string_cap_hit;   // ... and it was a string over MOON_MAX_STRING
    int fault_code;       // the MOON_ERR_* of the last moon_raise ...
    const void *fault_msg; // ... and its message object, to recognise it when it ends the call
    uint64_t deadline_ns;      // the running call's deadline (0 = none)
    uint64_t call_deadline_ns; // deadline for hook calls (moon_call_hook)
    uint64_t load_deadline_ns; // deadline for module bodies, init and other load-time calls
    uint64_t call_start_ns;    // when the running call was first polled (0 = not yet)
    int in_call;          // 1 while a hook runs: views answer only then
    char oom_where[128];
    char errbuf[MOON_ERRBUF];
    moon_msg req, res;
    moon_arena edit_arena;
    moon_edit edits[MOON_MAX_EDITS];
    int nedits;
    int req_ref, res_ref, edit_ref, target_ref, client_ref, tls_ref;
    const void *req_ud, *res_ud, *edit_ud;  // the view objects themselves, to check a method's self
    int template_ref;     // the table each new environment is copied from
    int call_base;        // stack top before a hook call's results
    // configured clusters (clusters.c): NUL-ended names in one malloc'd block; none = unknown
    char *cluster_bytes;
    moon_span *clusters;
    int nclusters;
    // script log lines (log.c), all in malloc'd memory: a fault cannot lose them
    int plugin;                   // the plugin whose code runs (moon_set_plugin)
    struct moon_log_rec *log_recs;
    int nlog, log_cap;
    moon_arena log_arena;
    struct moon_bucket *buckets;  // one rate-limit bucket per plugin index
    int nbuckets;
    struct moon_data_files *data_files;  // files plugins loaded (data_files.c), NULL until one is
} moon_ctx;

moon_ctx *moon_ctx_of(lua_State *L);
/// The monotonic clock in nanoseconds.
uint64_t moon_now_ns(void);
/// The innermost Lua function on the stack with a current line: its chunk name (`short_src`) into
/// `file` and its line into `*line`. An empty name and line 0 outside Lua code. Never raises.
void moon_where_parts(lua_State *L, char *file, size_t cap, int *line);
int moon_pcall(lua_State *L, lua_CFunction f, void *arg, int nresults);
void moon_arena_reset(moon_arena *a);
moon_span moon_arena_put(moon_arena *a, const char *p, size_t len, int lower);
/// Starts a call: the full instruction budget and `deadline_ns` (0 = none), measured from the first poll.
void moon_arm_call(lua_State *L, uint64_t deadline_ns);
/// Ends a call: no budget, no deadline.
void moon_disarm(lua_State *L);

/// Raises a Lua error whose message starts with the calling script's `file:line:` and records
/// `code` (a MOON_ERR_* status) as the fault kind the error reports when it ends the call.
/// Never returns.
int moon_raise(lua_State *L, int code, const char *fmt, ...);
/// Raises the message on top of the stack as is, recording `code` as moon_raise does. Never returns.
int moon_fail(lua_State *L, int code);

/// Polls the running call's deadline: cheap (a clock read), and raises a MOON_ERR_DEADLINE fault
/// once the call has run longer than its deadline. Any C loop whose work grows with its input
/// calls it every few thousand steps; so does the instruction hook.
void moon_deadline_poll(lua_State *L);

/// The longest string a script may build (a single allocation of a string object above it is
/// refused as a memory-cap fault), which bounds every linear library function.
#define MOON_MAX_STRING (1u << 20)

// installers, each run inside the protected sandbox set-up
void moon_install_views(lua_State *L, moon_ctx *ctx);
void moon_install_matchers(lua_State *L, int moongate_table);
// text_helpers.c: moongate.base64_encode / base64_decode / starts_with / ends_with
int moon_base64_encode(lua_State *L);
int moon_base64_decode(lua_State *L);
int moon_starts_with(lua_State *L);
int moon_ends_with(lua_State *L);
/// Registers the metatable `name` of an API object kind (checked with luaL_checkudata): its methods
/// as `__index`, hidden from scripts (`__metatable = false`). Leaves it on the stack for more fields.
void moon_register_meta(lua_State *L, const char *name, const luaL_Reg *methods);
/// Sets `find`, `match`, `gmatch` and `gsub` on the table at `string_table`: Lua 5.4 patterns with a
/// matcher that polls the deadline as it goes (patterns.c).
void moon_install_patterns(lua_State *L, int string_table);
/// Replaces `insert`, `remove`, `move`, `concat` and `sort` in the table at `table_lib` with versions
/// that poll the deadline (tablelib.c).
void moon_install_table_functions(lua_State *L, int table_lib);
/// Sets `regex` on the host module table at `moongate_table`: RE2 regular expressions (regex.c).
void moon_install_regex(lua_State *L, int moongate_table);
/// Sets `route`, `tunnel_via` (checked against the configured clusters) and `clusters` on the host
/// module table at `moongate_table` (clusters.c).
void moon_install_clusters(lua_State *L, int moongate_table);
/// True when `name` is a configured cluster, or when the list is unknown (clusters.c).
int moon_cluster_ok(moon_ctx *ctx, const char *name, size_t len);
/// Sets `log` on the host module table and `print` in the environment template (log.c).
void moon_install_log(lua_State *L, int moongate_table, int template_table);
/// Frees the log queue and the rate-limit buckets (log.c), and the cluster list (clusters.c).
void moon_free_log(moon_ctx *ctx);
void moon_free_clusters(moon_ctx *ctx);
/// Sets `htpasswd` on the host module table (htpasswd.c); frees the data files (data_files.c).
void moon_install_htpasswd(lua_State *L, int moongate_table);
void moon_free_data_files(moon_ctx *ctx);
int moon_is_token(const char *p, size_t len);
int moon_value_ok(const char *p, size_t len);
int moon_add_edit(lua_State *L, moon_ctx *ctx, int op, const char *n, size_t nlen, const char *v, size_t vlen);

#endif
