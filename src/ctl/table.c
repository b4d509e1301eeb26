#include "table.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "vec.h"

#define COLUMN_GAP 3

void rete_ctl_table_init(rete_ctl_table *t, size_t n_cols)
{
    memset(t, 0, sizeof(*t));
    t->n_cols = n_cols;
}

void rete_ctl_table_add_row(rete_ctl_table *t, const char *const *cells)
{
    RETE_GROW(t->cells, t->cap, (t->n_rows + 1) * t->n_cols, 8 * t->n_cols);
    for (size_t c = 0; c < t->n_cols; c++)
        t->cells[t->n_rows * t->n_cols + c] = rete_strdup(cells[c] ? cells[c] : "");
    t->n_rows++;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void rete_ctl_table_print(const rete_ctl_table *t, FILE *out)
{
    size_t *w = rete_calloc(t->n_cols ? t->n_cols : 1, sizeof(size_t));
    for (size_t r = 0; r < t->n_rows; r++)
        for (size_t c = 0; c < t->n_cols; c++) {
            size_t cw = width(t->cells[r * t->n_cols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            fputs(s, out);
            if (c + 1 < t->n_cols)
                fprintf(out, "%*s", (int)(w[c] - width(s) + COLUMN_GAP), "");
        }
        fputc('\n', out);
    }
    free(w);
}

void rete_ctl_table_free(rete_ctl_table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    rete_free(&t->cells);
    t->n_rows = t->cap = 0;
}

void rete_ctl_format_age(int64_t s, char *buf, size_t len)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm", (long long)(s / 60));
    else if (s < 86400)
        snprintf(buf, len, "%lldh", (long long)(s / 3600));
    else if (s < 365 * 86400LL)
        snprintf(buf, len, "%lldd", (long long)(s / 86400));
    else
        snprintf(buf, len, "%lldy", (long long)(s / (365 * 86400LL)));
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool rete_ctl_parse_time(const char *s, time_t *out)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, sec;
    if (!s || strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    long offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om))
            return false;
        offset = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm) - offset;
    return true;
}

bool rete_ctl_json_time(const json_t *v, time_t *out)
{
    if (json_is_integer(v)) {
        *out = (time_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        *out = (time_t)json_real_value(v);
        return true;
    }
    if (json_is_string(v))
        return rete_ctl_parse_time(json_string_value(v), out);
    return false;
}

bool rete_ctl_parse_http_date(const char *s, time_t *out)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm = {0};
    int d, y, h, mi, sec;
    /* "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7) */
    if (!s || strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || !digits(s + 5, 2, &d) ||
        s[7] != ' ' || s[11] != ' ' || !digits(s + 12, 4, &y) || s[16] != ' ' ||
        !digits(s + 17, 2, &h) || s[19] != ':' || !digits(s + 20, 2, &mi) || s[22] != ':' ||
        !digits(s + 23, 2, &sec) || strcmp(s + 25, " GMT") != 0)
        return false;
    const char *m = NULL;
    for (int i = 0; i < 12; i++)
        if (memcmp(months + 3 * i, s + 8, 3) == 0)
            m = months + 3 * i;
    if (!m)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = (int)((m - months) / 3);
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm);
    return true;
}
