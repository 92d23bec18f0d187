#ifndef DETECTQ_CSPAWN_H
#define DETECTQ_CSPAWN_H

#include <sys/types.h>

/// Starts `path` with `argv` (NULL-terminated) and the current environment, standard input from /dev/null,
/// standard output and error appended to `output_path`, and every other descriptor closed in the child, so
/// that daemons it starts inherit nothing of ours. Returns 0 and sets *pid, or an errno value.
int detectq_spawn(pid_t *pid, const char *path, char *const argv[], const char *output_path);

/// Starts `path` with `argv` in a process group of its own (so that it and its children can be killed
/// together), its standard input, output and error read from and written to the given open descriptors,
/// and every other descriptor closed in the child. Returns 0 and sets *pid, or an errno value.
int detectq_spawn_with_descriptors(pid_t *pid, const char *path, char *const argv[], int input, int output, int error);

#endif
