/* Text tables the way kubectl prints them: a header row in capitals, every
 * column as wide as its widest cell, three spaces between columns, the last
 * column unpadded. Also the time formatting the tables use. */
#ifndef RETE_CTL_TABLE_H
#define RETE_CTL_TABLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

typedef struct rete_ctl_table {
    size_t n_cols;
    size_t n_rows; /* including the header */
    size_t cap;    /* cells allocated */
    char **cells;  /* row-major, owned */
} rete_ctl_table;

void rete_ctl_table_init(rete_ctl_table *t, size_t n_cols);
/* Copies n_cols strings (NULL prints as empty). */
void rete_ctl_table_add_row(rete_ctl_table *t, const char *const *cells);
void rete_ctl_table_print(const rete_ctl_table *t, FILE *out);
void rete_ctl_table_free(rete_ctl_table *t);

/* kubectl-style short age: "5s", "3m", "2h", "4d", "2y"; negative -> "0s". */
void rete_ctl_format_age(int64_t seconds, char *buf, size_t len);

/* RFC 3339 UTC ("2024-05-01T10:00:00Z", fractional seconds and numeric
 * offsets accepted) -> unix time. */
bool rete_ctl_parse_time(const char *s, time_t *out);
/* A JSON time: a number of unix seconds or an RFC 3339 string. */
bool rete_ctl_json_time(const json_t *v, time_t *out);
/* IMF-fixdate (HTTP Date: "Sun, 06 Nov 1994 08:49:37 GMT") -> unix time. */
bool rete_ctl_parse_http_date(const char *s, time_t *out);

#endif
