#pragma once
// Shell completion and the man page, both read from the CLI11 app itself (its subcommands,
// positionals, options and descriptions), so neither can drift from the command line.
//
//   labctl completion bash|zsh|fish   a script for the shell; it asks `labctl __complete`
//   labctl __complete WORD... CUR      hidden: candidates for CUR, one per line
//   labctl __man                       hidden: labctl(1) in roff (the build runs it)

#include <optional>

#include <CLI/CLI.hpp>

namespace labctl::cli {

// Adds the `completion` subcommand to `app` and handles the hidden `__complete` and
// `__man` subcommands. Call it after every other subcommand is defined, just before
// app.parse(): returns the exit code when argv was one of the hidden subcommands.
std::optional<int> add_shell_support(CLI::App& app, int argc, char** argv);

}  // namespace labctl::cli
