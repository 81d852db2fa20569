"""Shell completion (`labctl completion bash|zsh|fish`, `labctl __complete`) and labctl(1)
(`labctl __man`), checked against the command line's own --help and real shells."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import LABCTL, run_labctl

BUILD = pathlib.Path(LABCTL).resolve().parent


def help_section(text, title):
    """The first words of the lines of a CLI11 --help section ("Subcommands", "Options")."""
    out, inside = [], False
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z]*:\s*$", line):
            inside = line.strip() == title + ":"
        elif inside and line.startswith("  ") and line.strip():
            out.append(line.split()[0])
    return out


def subcommands():
    r = run_labctl("--help")
    names = help_section(r.stdout, "Subcommands")
    assert {"up", "down", "status", "completion"} <= set(names), r.stdout
    return names


def options_of(sub):
    """Every option spelling of SUB (`-c,--count` -> -c, --count), but --help."""
    r = run_labctl(sub, "--help")
    spellings = []
    for first in help_section(r.stdout, "Options"):
        spellings += [s for s in first.split(",") if s.startswith("-")]
    return [s for s in spellings if s not in ("-h", "--help")]


def bash_complete(*words):
    """COMPREPLY of the generated bash completion for the command line WORDS (the last one
    being completed), in a real bash; runs `labctl` as the user typed it (LABCTL)."""
    script = run_labctl("completion", "bash").stdout
    words_q = " ".join(f"'{w}'" for w in (LABCTL, *words))
    prog = f'{script}\nCOMP_WORDS=({words_q}); COMP_CWORD={len(words)}; _labctl; printf "%s\\n" "${{COMPREPLY[@]}}"'
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_bash_accepts_the_script():
    r = run_labctl("completion", "bash")
    assert r.returncode == 0 and "complete -F _labctl labctl" in r.stdout
    assert subprocess.run(["bash", "-n"], input=r.stdout, text=True).returncode == 0


def test_completion_of_an_unknown_shell_is_a_usage_error():
    r = run_labctl("completion", "tcsh")
    assert r.returncode == 2 and "tcsh" in r.stderr


def test_bash_completes_every_subcommand_and_its_options():
    subs = subcommands()
    assert sorted(bash_complete("")) == sorted(subs)
    assert bash_complete("sta") == ["status"]
    for sub in subs:
        offered = bash_complete(sub, "-")
        for opt in options_of(sub):
            assert opt in offered, (sub, opt, offered)


def test_bash_completes_files_where_a_file_goes(tmp_path):
    (tmp_path / "topo-a.json").write_text("{}")
    os.mkdir(tmp_path / "topo-dir")
    got = bash_complete("validate", str(tmp_path / "topo-"))
    assert sorted(got) == [str(tmp_path / "topo-a.json"), str(tmp_path / "topo-dir")]
    assert bash_complete("graph", "x.json", "-o", str(tmp_path / "topo-a")) == [str(tmp_path / "topo-a.json")]
    # A count is no file name.
    assert bash_complete("ping", "lab", "a", "b", "-c", str(tmp_path / "topo-")) == []


def test_lab_and_node_names_of_a_running_lab(labs):
    path, name = labs.write({
        "nodes": {"alpha": {"interfaces": {"eth0": {"addresses": ["10.7.0.1/24"]}}},
                  "beta": {"interfaces": {"eth0": {"addresses": ["10.7.0.2/24"]}}}},
        "links": [{"endpoints": ["alpha:eth0", "beta:eth0"]}],
    })
    assert name not in bash_complete("status", "")
    assert run_labctl("up", path, "--no-verify").returncode == 0
    assert name in bash_complete("status", "")
    assert bash_complete("status", name[:-1]) == [n for n in bash_complete("status", "") if n.startswith(name[:-1])]
    assert name in bash_complete("down", "")
    assert sorted(bash_complete("ping", name, "")) == ["alpha", "beta"]
    assert bash_complete("ping", name, "alpha", "b") == ["beta"]
    assert sorted(bash_complete("exec", name, "")) == ["alpha", "beta"]
    # Options before the positionals do not shift them.
    assert sorted(bash_complete("ping", "-c", "2", name, "")) == ["alpha", "beta"]
    assert run_labctl("down", name).returncode == 0
    assert name not in bash_complete("status", "")


def test_complete_protocol_marks_files():
    r = run_labctl("__complete", "up", "")
    assert r.returncode == 0 and r.stdout.splitlines() == [":files"]
    r = run_labctl("__complete", "completion", "")
    assert r.stdout.splitlines() == ["bash", "zsh", "fish"]


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is in DEPS; absent here")
def test_zsh_accepts_and_runs_the_script():
    script = run_labctl("completion", "zsh").stdout
    assert script.startswith("#compdef labctl")
    assert subprocess.run(["zsh", "-n"], input=script, text=True).returncode == 0
    # Outside compinit: stub compdef/compadd/_files, then complete `labctl sta`.
    prog = ("compdef() { :; }; compadd() { [[ $1 == -- ]] && shift; print -l -- \"$@\"; }; _files() { print FILES; }\n"
            + script + f"\nwords=({LABCTL} sta); CURRENT=2; _labctl\n"
            + f"words=({LABCTL} up ''); CURRENT=3; _labctl\n")
    r = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["status", "FILES"]


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is in DEPS; absent here")
def test_fish_accepts_and_runs_the_script(tmp_path):
    script = run_labctl("completion", "fish").stdout
    f = tmp_path / "labctl.fish"
    f.write_text(script)
    assert subprocess.run(["fish", "--no-execute", str(f)]).returncode == 0
    # fish completes the command name as typed: put labctl on PATH under its own name.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "labctl").symlink_to(LABCTL)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    script = f"source {f}; complete -C 'labctl sta'; complete -C 'labctl up --no'"
    r = subprocess.run(["fish", "--no-config", "-c", script],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["status", "--no-verify"]


# ---- labctl(1) ----------------------------------------------------------------------------

def test_man_page_documents_every_subcommand_and_option():
    page = run_labctl("__man").stdout
    assert page.startswith(".\\\"") and "\n.TH LABCTL 1 " in page
    version = run_labctl("--version").stdout.split()[-1]
    assert f'"labctl {version}"' in page
    for sub in subcommands():
        assert f'\n.SS "{sub}"\n' in page, sub
        section = page.split(f'\n.SS "{sub}"\n', 1)[1].split("\n.SS ", 1)[0].split("\n.SH ", 1)[0]
        for opt in options_of(sub):
            assert "\\fB" + opt.replace("-", "\\-") + "\\fR" in section, (sub, opt)


def test_built_man_page_and_scripts_are_the_binarys_own():
    assert (BUILD / "shell" / "labctl.1").read_text() == run_labctl("__man").stdout
    for shell, name in (("bash", "labctl.bash"), ("zsh", "_labctl"), ("fish", "labctl.fish")):
        assert (BUILD / "shell" / name).read_text() == run_labctl("completion", shell).stdout


def test_man_renders_without_warnings(tmp_path):
    page = tmp_path / "labctl.1"
    page.write_text(run_labctl("__man").stdout)
    r = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    env = dict(os.environ, MANPAGER="cat", MANWIDTH="100", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    text = re.sub(r".\x08", "", r.stdout)
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    assert "labctl up FILE [--no-verify] [--json]" in text
    assert "labctl ping LAB FROM TO [-c COUNT] [-W TIMEOUT]" in text
    assert "labctl exec LAB NODE -- COMMAND..." in text
