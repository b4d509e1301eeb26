/* The files behind `-f`: a file, a directory (its *.yaml, *.yml and *.json,
 * sorted, not recursive) or "-" for standard input. */
#ifndef RETE_CTL_FILES_H
#define RETE_CTL_FILES_H

#include <stddef.h>

#include "error.h"

typedef struct rete_ctl_files {
    char **paths; /* owned; "-" for stdin */
    size_t n, cap;
} rete_ctl_files;

/* Expand each -f argument in order. Returns RETE_OK, or RETE_ENOTFOUND /
 * RETE_EIO with err naming the argument. */
RETE_MUST_CHECK rete_rc rete_ctl_files_expand(const char *const *args, size_t n,
                                              rete_ctl_files *out, rete_error *err);
void rete_ctl_files_free(rete_ctl_files *f);

/* The whole content of path ("-": stdin), NUL-terminated; NULL with err
 * (RETE_EIO). */
char *rete_ctl_read_file(const char *path, size_t *len, rete_error *err);

#endif
