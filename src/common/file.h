/* Small files written and read whole: keys, certificates, tokens, the
 * proxy's last good configuration, reted's context. */
#ifndef RETE_FILE_H
#define RETE_FILE_H

#include "result.h"

#include <stddef.h>
#include <sys/types.h>

/* Replace `path` with `data` atomically: a reader, or a restart after a
 * crash, sees the old content or the new one, never a mix. The file gets
 * `mode` before any byte is written (keys are never readable by others,
 * not even for an instant); data and directory are fsync'ed. */
RETE_MUST_CHECK rete_rc rete_file_write_atomic(const char *path, const char *data, size_t len,
                                               mode_t mode, char *err, size_t errlen);

/* The same for dir/name (RETE_EINVAL when the joined path is too long). */
RETE_MUST_CHECK rete_rc rete_file_write_in(const char *dir, const char *name, const char *data,
                                           size_t len, mode_t mode, char *err, size_t errlen);

/* The same for callers with no error to hand back: a failure is logged at
 * `level` (log.h) as "<context>: <reason>", or "<reason>" when context is
 * NULL, and returned. */
rete_rc rete_file_write_logged(const char *path, const char *data, size_t len, mode_t mode,
                               int level, const char *context);

/* rename(2) made durable: the directory is fsync'ed after it. */
RETE_MUST_CHECK rete_rc rete_file_rename(const char *from, const char *to, char *err, size_t errlen);

/* The whole file, NUL-terminated (malloc'ed), at most `max` bytes; NULL
 * when it cannot be read or is larger. *len_out (may be NULL) gets its size. */
char *rete_file_read(const char *path, size_t max, size_t *len_out);

#endif
