#pragma once
// Internal to userns/: the keeper process itself (keeper.cpp): making its user, mount,
// network and PID namespaces, the keeper's life in them, and starting it; userns.cpp
// finds, joins or starts a keeper, reads the settings that disable user namespaces, and
// answers the questions of userns.hpp.

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace labctl::userns::detail {

// In the state directory: the keeper's "PID START-TIME", and the lock every labctl
// process joined to the keeper holds (LOCK_SH) so that the keeper stays.
constexpr const char* kPidFile = ".keeper.pid";
constexpr const char* kLockFile = ".keeper.lock";

// The steps of making the keeper's namespaces, for messages.
enum Stage : int { kUnshareUser = 1, kSetgroups, kUidMap, kGidMap, kUnshareRest, kFork, kMountTmpfs };

// Writes all `n` bytes (again after EINTR); false on an error or a short write.
bool write_all(int fd, const void* data, std::size_t n);

// The message of a failed `stage` with `err`, naming the setting that disables user
// namespaces when one does.
std::string failure_message(int stage, int err);

// Starts a keeper; returns its pid once its namespaces and tmpfs are ready. Throws
// LabError naming the step that failed.
pid_t spawn_keeper(int rootfd, const std::string& netns_dir, uid_t uid, gid_t gid, int idle_s);

}  // namespace labctl::userns::detail
