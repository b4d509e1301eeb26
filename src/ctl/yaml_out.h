/* JSON -> YAML for `-o yaml`, `describe` and `proxy-config`, through libyaml's
 * emitter: block style, keys in document order (jansson keeps insertion
 * order), strings quoted only where a YAML 1.1 or 1.2 reader would take them
 * for something else ("yes", "on", "1.0", "", "2024-01-01", "~"); libyaml
 * itself quotes what plain style cannot carry ("a: b", "#x", leading spaces);
 * multi-line strings become literal blocks. */
#ifndef RETE_CTL_YAML_OUT_H
#define RETE_CTL_YAML_OUT_H

#include <jansson.h>
#include <stdbool.h>

#include "error.h"

/* The YAML text of `root` (malloc'ed, NUL-terminated), or NULL with a
 * message in err (may be NULL) when the emitter fails. */
char *rete_ctl_yaml_string(const json_t *root, rete_error *err);

/* True when the plain scalar `s` would not read back as this string. */
bool rete_ctl_yaml_ambiguous(const char *s);

#endif
