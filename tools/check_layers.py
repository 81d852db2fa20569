#!/usr/bin/python3
"""The include rule of core/: which module may include which (docs/architecture.md).

Every `#include "<module>/..."` in core/<module>/ and python/src/ is checked against ALLOWED
below (tests/ may include any module). A module always may include its own headers. An include of a module that is
not listed (or of an unknown module) is an error naming the file, the line and the rule.
Exit status 0 when every include is allowed, 1 otherwise.

    tools/check_layers.py [ROOT]      (ROOT: the repository; default: this file's parent's parent)
"""
import pathlib
import re
import sys

# module -> the modules it may include. Lower layers first; nothing includes a module
# to its right, and nothing below engine/ includes engine/, serve/ or cli/.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "nl": {"base"},
    "netns": {"base"},
    "topology": {"base"},
    "state": {"base"},
    "ping": {"base"},
    "proc": {"base", "netns", "userns"},
    "capture": {"base", "netns"},
    "graph": {"base", "topology"},
    "plan": {"base", "topology"},
    "userns": {"base", "netns", "state"},
    "rtnl": {"base", "netns", "nl", "userns"},
    "realize": {"base", "nl", "netns", "rtnl", "plan", "state", "topology"},
    "events": {"base", "nl", "netns", "state", "topology"},
    "engine": {"base", "netns", "rtnl", "topology", "plan", "realize", "state", "ping", "proc",
               "capture", "userns"},
    "serve": {"base", "topology", "state", "graph", "events", "engine"},
    "cli": {"base", "topology", "graph", "events", "engine", "serve", "userns"},
}
# The Python bindings see the engine (and base's error types) only.
BINDINGS_ALLOWED = {"base", "engine", "userns"}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"/]+)/[^"]*"')
SOURCES = ("*.cpp", "*.hpp", "*.h", "*.cc")


def sources(directory: pathlib.Path):
    for pattern in SOURCES:
        yield from sorted(directory.rglob(pattern))


def check_file(path: pathlib.Path, owner: str, allowed: set[str], root: pathlib.Path) -> list[str]:
    errors = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = INCLUDE.match(line)
        if not m:
            continue
        target = m.group(1)
        if target == owner:
            continue
        rel = path.relative_to(root)
        if target not in ALLOWED:
            errors.append(f"{rel}:{lineno}: includes unknown module '{target}/'")
        elif target not in allowed:
            may = ", ".join(sorted(allowed)) or "nothing"
            errors.append(f"{rel}:{lineno}: {owner}/ must not include {target}/ "
                          f"({owner}/ may include: {may})")
    return errors


def check(root: pathlib.Path) -> list[str]:
    errors = []
    core = root / "core"
    for module_dir in sorted(p for p in core.iterdir() if p.is_dir()):
        module = module_dir.name
        if module not in ALLOWED:
            errors.append(f"core/{module}/: a module with no rule: add it to ALLOWED in "
                          "tools/check_layers.py and to docs/architecture.md")
            continue
        for path in sources(module_dir):
            errors += check_file(path, module, ALLOWED[module], root)
    bindings = root / "python" / "src"
    if bindings.is_dir():
        for path in sources(bindings):
            errors += check_file(path, "python/src", BINDINGS_ALLOWED, root)
    return errors


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1]) if len(argv) > 1 else pathlib.Path(__file__).resolve().parents[1]
    errors = check(root)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_layers: {len(errors)} forbidden include(s); the rule is in "
              "docs/architecture.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
