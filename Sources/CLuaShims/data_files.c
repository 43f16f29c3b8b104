// Data files a plugin loads while it initialises (htpasswd files): the generation's own copies.
//
// The load that checks a generation reads each file from disk and records it; Swift then hands the
// recorded bytes to every Lua state of that generation (moon_preload_data_file), so every event
// loop serves exactly the files that were checked, and none of them touches the disk. The reloader
// watches the recorded paths like scripts.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "htpasswd.h"

typedef struct moon_data_entry {
    char *path;   // resolved (the data folder prepended to a relative path)
    char *bytes;
    size_t len;
    int used;     // asked for by a plugin of this state
} moon_data_entry;

struct moon_data_files {
    char *folder;               // relative paths are resolved against it (NULL: the working directory)
    moon_data_entry *items;
    int n, cap;
    uint64_t plugin_deadline_ns;  // the hook deadline of the plugin loading now (0: the state's)
};

static struct moon_data_files *files_of(lua_State *L) {
    moon_ctx *ctx = moon_ctx_of(L);
    if (ctx->data_files == NULL) ctx->data_files = calloc(1, sizeof(struct moon_data_files));
    return ctx->data_files;
}

void moon_free_data_files(moon_ctx *ctx) {
    struct moon_data_files *f = ctx->data_files;
    if (f == NULL) return;
    for (int i = 0; i < f->n; i++) {
        free(f->items[i].path);
        free(f->items[i].bytes);
    }
    free(f->items);
    free(f->folder);
    free(f);
    ctx->data_files = NULL;
}

void moon_set_data_folder(lua_State *L, const char *folder) {
    struct moon_data_files *f = files_of(L);
    if (f == NULL) return;
    free(f->folder);
    f->folder = (folder == NULL || folder[0] == 0 || strcmp(folder, ".") == 0) ? NULL : strdup(folder);
}

void moon_set_plugin_deadline(lua_State *L, uint64_t ns) {
    struct moon_data_files *f = files_of(L);
    if (f != NULL) f->plugin_deadline_ns = ns;
}

uint64_t moon_loading_plugin_deadline(lua_State *L) {
    struct moon_data_files *f = moon_ctx_of(L)->data_files;
    if (f != NULL && f->plugin_deadline_ns != 0) return f->plugin_deadline_ns;
    return moon_ctx_of(L)->call_deadline_ns;
}

// Adds an entry that owns `bytes`; NULL when out of memory.
static moon_data_entry *add_entry(struct moon_data_files *f, const char *path, char *bytes, size_t len) {
    if (f->n == f->cap) {
        int ncap = f->cap ? f->cap * 2 : 4;
        moon_data_entry *items = realloc(f->items, (size_t)ncap * sizeof *items);
        if (items == NULL) return NULL;
        f->items = items;
        f->cap = ncap;
    }
    char *copy = strdup(path);
    if (copy == NULL) return NULL;
    moon_data_entry *e = &f->items[f->n++];
    e->path = copy;
    e->bytes = bytes;
    e->len = len;
    e->used = 0;
    return e;
}

int moon_preload_data_file(lua_State *L, const char *path, const char *bytes, size_t len) {
    struct moon_data_files *f = files_of(L);
    char *copy = malloc(len ? len : 1);
    if (f == NULL || copy == NULL) {
        free(copy);
        return -1;
    }
    if (len) memcpy(copy, bytes, len);
    if (add_entry(f, path, copy, len) == NULL) {
        free(copy);
        return -1;
    }
    return 0;
}

// Reads a regular file of at most MOON_DATA_FILE_MAX bytes into a malloc'd buffer.
static char *read_file(const char *path, size_t *len, char *err, size_t errcap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errcap, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap, "not a regular file");
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > MOON_DATA_FILE_MAX) {
        snprintf(err, errcap, "%lld bytes, over the limit of %u", (long long)st.st_size, MOON_DATA_FILE_MAX);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, used = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        snprintf(err, errcap, "out of memory");
        close(fd);
        return NULL;
    }
    for (;;) {
        if (used == cap) {  // the file grew while we read it
            snprintf(err, errcap, "the file changed while it was read");
            free(buf);
            close(fd);
            return NULL;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(err, errcap, "%s", strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    *len = used;
    return buf;
}

const char *moon_data_file(lua_State *L, const char *path, char *resolved, size_t cap, size_t *len, char *err,
                           size_t errcap) {
    struct moon_data_files *f = files_of(L);
    if (f == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (path[0] == '/' || f->folder == NULL) snprintf(resolved, cap, "%s", path);
    else snprintf(resolved, cap, "%s/%s", f->folder, path);
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->items[i].path, resolved) == 0) {
            f->items[i].used = 1;
            *len = f->items[i].len;
            return f->items[i].bytes;
        }
    }
    size_t n = 0;
    char *bytes = read_file(resolved, &n, err, errcap);
    if (bytes == NULL) return NULL;
    moon_data_entry *e = add_entry(f, resolved, bytes, n);
    if (e == NULL) {
        free(bytes);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    e->used = 1;
    *len = n;
    return bytes;
}

int moon_data_file_count(lua_State *L) {
    struct moon_data_files *f = moon_ctx_of(L)->data_files;
    int count = 0;
    for (int i = 0; f != NULL && i < f->n; i++) count += f->items[i].used;
    return count;
}

int moon_data_file_at(lua_State *L, int index, const char **path, const char **bytes, size_t *len) {
    struct moon_data_files *f = moon_ctx_of(L)->data_files;
    for (int i = 0, seen = 0; f != NULL && i < f->n; i++) {
        if (!f->items[i].used) continue;
        if (seen++ == index) {
            *path = f->items[i].path;
            *bytes = f->items[i].bytes;
            *len = f->items[i].len;
            return 1;
        }
    }
    return 0;
}
