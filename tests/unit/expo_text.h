/* Reading Prometheus exposition text in unit tests (test_metrics.c,
 * test_stats.c). */
#ifndef RETE_TEST_EXPO_TEXT_H
#define RETE_TEST_EXPO_TEXT_H

#include <stdlib.h>
#include <string.h>

/* The value on the exposition line that starts with `prefix` (name and
 * labels, without the trailing space), or -1. */
static inline double value_of(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, prefix, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

#endif
