/* Small files written and read whole: keys, certificates, tokens, the
 * proxy's last good configuration, reted's context. */
#ifndef RETE_FILE_H
#define RETE_FILE_H

#include "error.h"

#include <stddef.h>
#include <sys/types.h>

/* Replace `path` with `data` atomically: a reader, or a restart after a
 * crash, sees the old content or the new one, never a mix. The file gets
 * `mode` before any byte is written (keys are never readable by others,
 * not even for an instant); data and directory are fsync'ed. The one
 * writer of the project's files: reted's data directory and CA, retectl's
 * `identity issue`, the proxy's certificates and last good configuration.
 * On failure *err says "<path>: <reason>". */
RETE_MUST_CHECK rete_rc rete_file_write_atomic(const char *path, const char *data, size_t len,
                                               mode_t mode, rete_error *err);

/* rename(2) made durable: the directory is fsync'ed after it. */
RETE_MUST_CHECK rete_rc rete_file_rename(const char *from, const char *to, rete_error *err);

/* The whole file, NUL-terminated (malloc'ed), at most `max` bytes; NULL
 * when it cannot be read or is larger. *len_out (may be NULL) gets its size. */
char *rete_file_read(const char *path, size_t max, size_t *len_out);

#endif
