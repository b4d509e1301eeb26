#include "file.h"
#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static rete_rc fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return RETE_EIO;
    int r = fsync(fd);
    close(fd);
    return r == 0 ? RETE_OK : RETE_EIO;
}

rete_rc rete_file_rename(const char *from, const char *to, rete_error *err)
{
    if (rename(from, to) != 0 || fsync_dir_of(to) != RETE_OK)
        return rete_error_set(err, RETE_EIO, "rename %s to %s: %s", from, to, strerror(errno));
    return RETE_OK;
}

rete_rc rete_file_write_atomic(const char *path, const char *data, size_t len, mode_t mode,
                               rete_error *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
        return rete_error_set(err, RETE_EINVAL, "%s: path too long", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return rete_error_set(err, RETE_EIO, "%s: %s", tmp, strerror(errno));
    bool ok = fchmod(fd, mode) == 0;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        if (ok)
            off += (size_t)w;
    }
    ok = ok && fsync(fd) == 0;
    int saved = errno;
    ok = (close(fd) == 0) && ok;
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        saved = errno ? errno : saved;
        unlink(tmp);
        return rete_error_set(err, RETE_EIO, "%s: %s", path, strerror(saved));
    }
    if (fsync_dir_of(path) != RETE_OK)
        return rete_error_set(err, RETE_EIO, "%s: fsync of its directory: %s", path, strerror(errno));
    return RETE_OK;
}

char *rete_file_read(const char *path, size_t max, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        close(fd);
        return NULL;
    }
    char *p = rete_malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    p[got] = '\0';
    if (len_out)
        *len_out = got;
    return p;
}
