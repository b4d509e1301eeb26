/* Running nft / iptables for rete-proxy init: the one place it starts
 * processes (init.h, rete_init_run). init runs before the proxy, with no
 * event loop, so this blocks. */
#include "init.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int rete_init_run(const char *const *argv, const char *input, bool quiet, char *err, size_t errlen)
{
    int pfd[2] = {-1, -1};
    if (input && pipe2(pfd, O_CLOEXEC) != 0) {
        rete_errf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (input)
        posix_spawn_file_actions_adddup2(&fa, pfd[0], STDIN_FILENO);
    else
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (quiet) {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    } else {
        /* the tool's own messages go with ours, on standard error */
        posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
    }
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (input)
        close(pfd[0]);
    if (rc != 0) {
        if (input)
            close(pfd[1]);
        rete_errf(err, errlen, "cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    if (input) {
        /* A tool that exits early closes its end: EPIPE (SIGPIPE is ignored
         * by rete_init_main), then its exit status says why. */
        size_t len = strlen(input), off = 0;
        while (off < len) {
            ssize_t n = write(pfd[1], input + off, len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        close(pfd[1]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            rete_errf(err, errlen, "waiting for %s: %s", argv[0], strerror(errno));
            return -1;
        }
    }
    if (WIFEXITED(status)) {
        /* posix_spawnp reports a missing program as exit 127 from the child
         * on some libcs rather than as its own error */
        if (WEXITSTATUS(status) == 127)
            rete_errf(err, errlen, "cannot run %s (exit 127: not installed?)", argv[0]);
        return WEXITSTATUS(status);
    }
    rete_errf(err, errlen, "%s killed by signal %d", argv[0], WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return -1;
}
