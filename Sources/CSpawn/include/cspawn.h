#ifndef DETECTQ_CSPAWN_H
#define DETECTQ_CSPAWN_H

#include <sys/types.h>

/// Starts `path` with `argv` (NULL-terminated) and the current environment, standard input from /dev/null,
/// standard output and error appended to `output_path`, and every other descriptor closed in the child, so
/// that daemons it starts inherit nothing of ours. Returns 0 and sets *pid, or an errno value.
int detectq_spawn(pid_t *pid, const char *path, char *const argv[], const char *output_path);

#endif
