/* Logging: the level is checked before the arguments are evaluated (Redis's
 * serverLog), so a disabled debug line costs one comparison. Lines go to
 * stderr as `time level [ctx] message`. */
#ifndef RETE_LOG_H
#define RETE_LOG_H

enum rete_log_level { RETE_LOG_ERROR, RETE_LOG_WARN, RETE_LOG_INFO, RETE_LOG_DEBUG, RETE_LOG_TRACE };

extern int rete_log_level;

void rete_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse "error|warn|info|debug|trace"; returns -1 when unknown. */
int rete_log_level_parse(const char *name);
const char *rete_log_level_name(int level);

#define RETE_LOG(level, ...)                                                                       \
    do {                                                                                           \
        if ((level) <= rete_log_level)                                                             \
            rete_log_write((level), __VA_ARGS__);                                                  \
    } while (0)

#define rete_err(...) RETE_LOG(RETE_LOG_ERROR, __VA_ARGS__)
#define rete_warn(...) RETE_LOG(RETE_LOG_WARN, __VA_ARGS__)
#define rete_info(...) RETE_LOG(RETE_LOG_INFO, __VA_ARGS__)
#define rete_debug(...) RETE_LOG(RETE_LOG_DEBUG, __VA_ARGS__)

#endif
