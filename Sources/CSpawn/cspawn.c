#define _GNU_SOURCE
#include "cspawn.h"

#include <fcntl.h>
#include <spawn.h>

extern char **environ;

int detectq_spawn(pid_t *pid, const char *path, char *const argv[], const char *output_path) {
    posix_spawn_file_actions_t actions;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return result;
    if ((result = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
        (result = posix_spawn_file_actions_addopen(&actions, 1, output_path, O_WRONLY | O_CREAT | O_APPEND, 0644)) == 0 &&
        (result = posix_spawn_file_actions_adddup2(&actions, 1, 2)) == 0 &&
        (result = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) == 0) {
        result = posix_spawn(pid, path, &actions, NULL, argv, environ);
    }
    posix_spawn_file_actions_destroy(&actions);
    return result;
}

int detectq_spawn_with_descriptors(pid_t *pid, const char *path, char *const argv[], int input, int output, int error) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return result;
    if ((result = posix_spawnattr_init(&attributes)) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return result;
    }
    if ((result = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP)) == 0 &&
        (result = posix_spawnattr_setpgroup(&attributes, 0)) == 0 &&
        (result = posix_spawn_file_actions_adddup2(&actions, input, 0)) == 0 &&
        (result = posix_spawn_file_actions_adddup2(&actions, output, 1)) == 0 &&
        (result = posix_spawn_file_actions_adddup2(&actions, error, 2)) == 0 &&
        (result = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) == 0) {
        result = posix_spawn(pid, path, &actions, &attributes, argv, environ);
    }
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return result;
}
