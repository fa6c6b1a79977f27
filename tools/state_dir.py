#!/usr/bin/env python3
"""Checks for the state directories of tools/cache_server.sh and tools/buildgrid.sh.

A server started by root must not use what another local user made: a state
directory (or a directory above it) they can write, a configuration file
that is a link to a file of root's, a store they can fill, a pid file that
names a process of root's.

    tools/state_dir.py check [--mode MODE] [--owner USER] [--links-under DIR] TOOL STATE
    tools/state_dir.py pid TOOL PIDFILE PATTERN

`check` makes STATE (mode MODE, default 0700) if it is missing, else fails
unless it is a directory of this user's that no one else may write; each
directory above it must be root's or this user's, and sticky if others may
write it. Every entry below STATE must be owned by this user, root or USER
(`--owner`, repeatable), be writable by no one else, and not be a symbolic
link (except under STATE/DIR, `--links-under`, repeatable). STATE's path must
be plain (letters, digits and `._+-/@=,`): it goes into configuration files.

`pid` prints the pid in PIDFILE if that is a regular file of this user's or
root's and the process runs as this user with PATTERN in its command line;
otherwise it prints why not on stderr and exits 1 (a stale or planted pid
file: nothing to stop).

Errors are one line, `TOOL: ...`, exit status 1.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import stat
import sys

PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+/@=,-]*$")


class Unsafe(Exception):
    pass


def _who(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise Unsafe(f"no user {user}") from None


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(stat.S_IMODE(st.st_mode) & 0o022)


def check_ancestors(path: str) -> None:
    """Every directory above `path` is root's or ours, and sticky if others may write it."""
    mine = (0, os.geteuid())
    current = "/"
    for part in [p for p in os.path.dirname(path).split("/") if p]:
        current = os.path.join(current, part)
        st = os.stat(current)
        if st.st_uid not in mine:
            raise Unsafe(f"{current}, above it, is owned by {_who(st.st_uid)}")
        if _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
            raise Unsafe(
                f"{current}, above it, is writable by other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}) and not sticky"
            )


def check(state: str, mode: int, owners: list[str], links_under: list[str]) -> None:
    if not PLAIN_PATH.match(state):
        raise Unsafe(
            "its path may hold only letters, digits and ._+-/@=, (it is written "
            "into configuration files)"
        )
    check_ancestors(state)
    try:
        os.mkdir(state, mode)
        os.chmod(state, mode)  # not narrowed by the umask
    except FileExistsError:
        pass
    st = os.lstat(state)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise Unsafe("it is not a directory (a symbolic link is not followed)")
    if st.st_uid != os.geteuid():
        raise Unsafe(f"it is owned by {_who(st.st_uid)}, not by you")
    if _writable_by_others(st):
        raise Unsafe(
            f"it is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
        )
    allowed = {0, os.geteuid(), *(_uid(u) for u in owners)}
    linked = tuple(os.path.join(state, d) + "/" for d in links_under)
    for root, dirs, files in os.walk(state):
        dirs.sort()
        for name in sorted(dirs + files):  # the first problem, the same every time
            path = os.path.join(root, name)
            entry = os.lstat(path)
            if path.startswith(linked) and stat.S_ISLNK(entry.st_mode):
                continue
            if stat.S_ISLNK(entry.st_mode):
                raise Unsafe(f"{path} is a symbolic link")
            if entry.st_uid not in allowed:
                raise Unsafe(f"{path} is owned by {_who(entry.st_uid)}")
            if _writable_by_others(entry):
                raise Unsafe(
                    f"{path} is writable by other users "
                    f"(mode {stat.S_IMODE(entry.st_mode):04o})"
                )


def our_pid(pidfile: str, pattern: str) -> int:
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Unsafe("") from None  # not started: nothing to say
    except OSError as e:
        raise Unsafe(f"cannot read {pidfile}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
            raise Unsafe(f"{pidfile} is not a file of yours; not trusted")
        text = f.read(64).decode("ascii", "replace").strip()
    if not text.isdigit() or int(text) < 2:
        raise Unsafe(f"{pidfile} holds no pid")
    pid = int(text)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        raise Unsafe("") from None  # not running: nothing to stop, nothing to say
    if uid != os.geteuid() or pattern not in command:
        raise Unsafe(
            f"pid {pid} of {pidfile} is not this server ({_who(uid)}: "
            f"{command.strip()[:80]}); left alone"
        )
    return pid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="state_dir.py")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check")
    checking.add_argument("--mode", type=lambda s: int(s, 8), default=0o700)
    checking.add_argument("--owner", action="append", default=[])
    checking.add_argument("--links-under", action="append", default=[])
    checking.add_argument("tool")
    checking.add_argument("state")
    pid = commands.add_parser("pid")
    pid.add_argument("tool")
    pid.add_argument("pidfile")
    pid.add_argument("pattern")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            try:
                check(args.state, args.mode, args.owner, args.links_under)
            except OSError as e:
                raise Unsafe(f"{e.filename}: {e.strerror}") from None
        else:
            print(our_pid(args.pidfile, args.pattern))
        return 0
    except Unsafe as e:
        if args.command == "check":
            print(
                f"{args.tool}: STATE_DIR {args.state} is not safe to use: {e}; another "
                "user could change what the server serves or runs. Use a new directory "
                "of your own (it is made with the right modes), or remove this one",
                file=sys.stderr,
            )
        elif str(e):
            print(f"{args.tool}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
