#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "vec.h"

static void push(rete_ctl_files *f, char *p)
{
    RETE_GROW(f->paths, f->cap, f->n + 1, 8);
    f->paths[f->n++] = p;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n > m && strcmp(s + n - m, suf) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

rete_rc rete_ctl_files_expand(const char *const *args, size_t n, rete_ctl_files *out,
                              rete_error *err)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (strcmp(args[i], "-") == 0) {
            push(out, rete_strdup("-"));
            continue;
        }
        if (stat(args[i], &st) != 0)
            return rete_error_set(err, RETE_ENOTFOUND, "%s: %s", args[i], strerror(errno));
        if (!S_ISDIR(st.st_mode)) {
            push(out, rete_strdup(args[i]));
            continue;
        }
        DIR *d = opendir(args[i]);
        if (!d)
            return rete_error_set(err, RETE_EIO, "%s: %s", args[i], strerror(errno));
        size_t first = out->n;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' ||
                !(has_suffix(e->d_name, ".yaml") || has_suffix(e->d_name, ".yml") ||
                  has_suffix(e->d_name, ".json")))
                continue;
            size_t len = strlen(args[i]) + strlen(e->d_name) + 2;
            char *p = rete_malloc(len);
            bool slash = has_suffix(args[i], "/");
            snprintf(p, len, "%s%s%s", args[i], slash ? "" : "/", e->d_name);
            push(out, p);
        }
        closedir(d);
        qsort(out->paths + first, out->n - first, sizeof(char *), cmp_str);
        if (out->n == first)
            return rete_error_set(err, RETE_ENOTFOUND,
                                  "%s: no *.yaml, *.yml or *.json files in this directory",
                                  args[i]);
    }
    return RETE_OK;
}

void rete_ctl_files_free(rete_ctl_files *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->paths[i]);
    rete_free(&f->paths);
    f->n = f->cap = 0;
}

char *rete_ctl_read_file(const char *path, size_t *len, rete_error *err)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        rete_error_set(err, RETE_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = rete_malloc(cap);
    for (;;) {
        RETE_GROW(buf, cap, n + 2, 4096);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    bool failed = ferror(f);
    if (!is_stdin)
        fclose(f);
    if (failed) {
        rete_error_set(err, RETE_EIO, "%s: read error", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}
