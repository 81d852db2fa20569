#pragma once
// Internal to engine/: removing a lab from its journal, and finding which lab owns a
// namespace name. Everything here acts on identities the journal recorded, never on
// names alone (netns::NetnsIdentity).

#include <string>

#include "state/state.hpp"

namespace labctl::engine::detail {

// What to say about a recorded name that now holds something else: `down` reports it
// (exit 3); the rollback of an `up` that lost the name to another lab stays quiet, as
// the name was never its own.
enum class ForeignNames { report, quiet };

// Stops the lab's daemons; then, a chunk of its namespaces at a time (chunks.hpp), stops
// every process in them (found through /proc even when a namespace's name is gone) with
// one grace per chunk, and unmounts and unlinks them: what it holds open is bounded
// however many nodes the lab has. Then it removes the state directory, unless some of
// the lab's own processes, mounts or files could not be removed: then the journal
// stays, so that another `down` finishes the job. Nothing whose identity differs from
// the recorded one is signalled, unmounted or unlinked. Throws LabError listing every
// problem (after doing all the rest), KernelError when the state directory cannot be
// read or a namespace's cookie cannot be (then the journal stays).
void teardown(const state::LabRecord& rec, ForeignNames foreign);

// The lab (other than `except`) whose journal, in this state root, records namespace
// `netns`; "" when none does. Throws nothing.
std::string owner_of(const std::string& netns, const std::string& except);

}  // namespace labctl::engine::detail
