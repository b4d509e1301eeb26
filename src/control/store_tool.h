/* `reted migrate`, `reted backup`, `reted restore` (docs/operations.md,
 * "Migration, backup and restore"): whole stores copied between backends
 * or to a file, with the join tokens and the CA. */
#ifndef RETE_CONTROL_STORE_TOOL_H
#define RETE_CONTROL_STORE_TOOL_H

/* argv[0] is the subcommand. The process's exit status: 0, 1 (failed, a
 * message on stderr), 2 (usage). */
int reted_store_tool(int argc, char **argv);

#endif
