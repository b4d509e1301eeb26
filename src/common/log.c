#include "log.h"
#include "result.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int rete_log_level = RETE_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

const char *rete_log_level_name(int level)
{
    if (level < 0 || level > RETE_LOG_TRACE)
        return "?";
    return level_names[level];
}

int rete_log_level_parse(const char *name)
{
    for (int i = 0; i <= RETE_LOG_TRACE; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void rete_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, rete_log_level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* Messages carry what peers sent (a NACK's error, a refused hello's
     * claims, header values): a control character is written as \xNN, so
     * a peer can neither forge log lines with a newline nor drive a
     * terminal. Escaping stops where the line is full. */
    char out[sizeof(line)];
    size_t o = (size_t)n;
    memcpy(out, line, (size_t)n);
    for (size_t i = (size_t)n; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c >= 0x20 && c != 0x7f) {
            out[o++] = (char)c;
        } else if (o + 4 <= sizeof(out) - 2) {
            static const char hex[] = "0123456789abcdef";
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            break;
        }
        if (o >= sizeof(out) - 2)
            break;
    }
    len = o;
    out[len++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(out, 1, len, stderr);
}
