"""Linux: a proxy that has bound its sockets keeps only the capabilities its
options need, and may run as another user (``proxy --user``);
docs/service.md, "Privileges".

What the relaying needs: CAP_NET_ADMIN for SO_MARK on every upstream (the
records), and with IP_TRANSPARENT (--transparent, --keep-client-address,
--udp) CAP_NET_RAW as well. CAP_NET_BIND_SERVICE only matters while a port
below 1024 is bound, which is done by then. Everything else goes from the
effective, permitted, inheritable, ambient and bounding sets, through
capset(2) and prctl(2) (libc through ctypes: no dependency), and the result
is read back from /proc and checked.

Capabilities belong to each thread: this runs in the main thread before the
proxy starts any other (the native relay's, an executor's), and checks that
no thread holds more than it keeps.
"""

from __future__ import annotations

import ctypes
import os
import sys

# linux/capability.h
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
NAMES = {
    CAP_KILL: "CAP_KILL",
    CAP_SETGID: "CAP_SETGID",
    CAP_SETUID: "CAP_SETUID",
    CAP_SETPCAP: "CAP_SETPCAP",
    CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_NET_RAW: "CAP_NET_RAW",
}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# linux/prctl.h
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def bit(capability: int) -> int:
    return 1 << capability


def needed(transparent: bool) -> int:
    """The capabilities relaying needs (a mask): SO_MARK, and IP_TRANSPARENT
    with `transparent` options."""
    return bit(CAP_NET_ADMIN) | (bit(CAP_NET_RAW) if transparent else 0)


def starting(transparent: bool, user: str | None, binding: bool) -> int:
    """What a process that starts proxies (a ``--workers`` parent) keeps for
    them (a mask): what they need, and what they hold until bound (keep_only):
    CAP_NET_BIND_SERVICE for `binding`, CAP_SETUID and CAP_SETGID to become
    `user`, and CAP_SETPCAP to drop the rest from their bounding set; with
    `user`, CAP_KILL as well, to signal them once they are that user."""
    mask = needed(transparent) | bit(CAP_SETPCAP)
    if binding:
        mask |= bit(CAP_NET_BIND_SERVICE)
    if user is not None:
        mask |= bit(CAP_SETUID) | bit(CAP_SETGID) | bit(CAP_KILL)
    return mask


def names(mask: int) -> str:
    """`mask`'s capabilities, as CAP_A,CAP_B ("none" for none)."""
    chosen = [NAMES.get(number, str(number)) for number in range(64) if mask >> number & 1]
    return ",".join(chosen) or "none"


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def status(path: str = "/proc/thread-self/status") -> dict[str, str]:
    """A /proc status file's fields (this thread's by default)."""
    with open(path, encoding="ascii") as lines:
        return dict(line.rstrip("\n").split(":\t", 1) for line in lines if ":\t" in line)


def sets(fields: dict[str, str]) -> dict[str, int]:
    """The capability sets of a status file's `fields`, by their names there."""
    return {
        name: int(fields[name], 16)
        for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
        if name in fields
    }


class PrivilegeError(OSError):
    """A step of the drop failed, or its result is not what was asked."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, call: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise PrivilegeError(number, f"{call}: {os.strerror(number)}")


def _prctl(libc: ctypes.CDLL, option: int, argument: int) -> None:
    call = libc.prctl
    call.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _check(call(option, argument, 0, 0, 0), f"prctl({option}, {argument})")


def _capset(libc: ctypes.CDLL, effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for word in range(2):
        data[word].effective = effective >> (32 * word) & 0xFFFFFFFF
        data[word].permitted = permitted >> (32 * word) & 0xFFFFFFFF
        data[word].inheritable = inheritable >> (32 * word) & 0xFFFFFFFF
    _check(libc.capset(ctypes.byref(header), data), "capset")


def switching_problem(user: str | None) -> str:
    """Why this process cannot become `user` ("" when it can, or needs not)."""
    if sys.platform != "linux" or user is None:
        return ""
    import pwd

    entry = pwd.getpwnam(user)
    if os.getuid() == os.geteuid() == entry.pw_uid:
        return ""
    permitted = sets(status("/proc/self/status"))["CapPrm"]
    if permitted & bit(CAP_SETUID) and permitted & bit(CAP_SETGID):
        return ""
    return (
        f"--user {user}: becoming another user takes CAP_SETUID and CAP_SETGID, "
        "which this process lacks (start it as root)"
    )


#: What keep_only left for finish: (the capabilities kept, the extra ones
#: held meanwhile that leave the bounding set, the bounding set meanwhile,
#: the user to become: name, uid, gid).
_pending: tuple[int, int, int, tuple[str, int, int] | None] | None = None


def keep_only(wanted: int, user: str | None, binding: bool = False) -> tuple[int, str] | None:
    """Keep the capabilities `wanted` (those of them this process has) and
    drop every other, from every set. With `binding` (a port below 1024)
    CAP_NET_BIND_SERVICE stays until finish(); so do CAP_SETUID and
    CAP_SETGID with `user`, whom finish() makes this process: the modules
    the sockets' binding imports are read as this process's user. What is
    kept and who runs, or None when there was nothing to drop and no user
    to become. PrivilegeError when a step fails or the result differs from
    the intent."""
    global _pending
    if sys.platform != "linux":
        return None
    import pwd

    before = sets(status())
    permitted = before["CapPrm"]
    keep = wanted & permitted
    # SO_MARK takes CAP_NET_RAW too (Linux 5.17+): kept when it is all there is.
    if wanted & ~permitted & bit(CAP_NET_ADMIN) and permitted & bit(CAP_NET_RAW):
        keep |= bit(CAP_NET_RAW)
    entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
    switch = user is not None and not os.getuid() == os.geteuid() == entry.pw_uid
    extra = (bit(CAP_NET_BIND_SERVICE) if binding else 0) | (
        bit(CAP_SETUID) | bit(CAP_SETGID) if switch else 0
    )
    if extra:
        extra = (extra | bit(CAP_SETPCAP)) & permitted & ~keep
    held = keep | extra
    # What can be dropped from the bounding set (it takes CAP_SETPCAP).
    bounding_drop = before["CapBnd"] & ~held if permitted & bit(CAP_SETPCAP) else 0
    if (
        not switch
        and permitted == before["CapEff"] == held
        and not before["CapInh"]
        and not before.get("CapAmb", 0)
        and not bounding_drop
    ):
        return None
    libc = _libc()
    # Everything permitted made effective: dropping from the bounding set
    # needs CAP_SETPCAP.
    _capset(libc, permitted, permitted, 0)
    for number in range(64):
        if bounding_drop >> number & 1:
            _prctl(libc, PR_CAPBSET_DROP, number)
    # Only those, effective and permitted; nothing inheritable (which
    # empties the ambient set too).
    _capset(libc, held, held, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3
    bounding = before["CapBnd"] & ~bounding_drop
    _verify(held, bounding, None)
    if extra or switch:
        ids = (entry.pw_name, entry.pw_uid, entry.pw_gid) if switch else None
        # The held ones leave the bounding set too, where that can be done.
        _pending = (keep, extra if permitted & bit(CAP_SETPCAP) else 0, bounding, ids)
    return keep, entry.pw_name


def finish() -> None:
    """Once the sockets are bound, before any other thread starts: become
    the user keep_only was given, and drop what it held for that and for
    the binding (nothing when it left nothing)."""
    global _pending
    if _pending is None or sys.platform != "linux":
        return
    keep, extra, bounding, user = _pending
    _pending = None
    libc = _libc()
    # First, while CAP_SETPCAP is effective (setuid empties the effective set).
    for number in range(64):
        if extra >> number & 1:
            _prctl(libc, PR_CAPBSET_DROP, number)
    if user is not None:
        name, uid, gid = user
        # setuid from root empties the permitted set unless keepcaps is on.
        _prctl(libc, PR_SET_KEEPCAPS, 1)
        os.setgroups(os.getgrouplist(name, gid))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _prctl(libc, PR_SET_KEEPCAPS, 0)
    _capset(libc, keep, keep, 0)
    _verify(keep, bounding & ~extra, None if user is None else user[1:])


def _verify(keep: int, bounding: int, ids: tuple[int, int] | None) -> None:
    """The process is as intended, read back from /proc: each thread holds
    at most `keep`, the main one exactly that; a user switched everywhere."""
    main = status("/proc/self/status")
    expected = {"CapInh": 0, "CapPrm": keep, "CapEff": keep, "CapBnd": bounding, "CapAmb": 0}
    found = {name: value for name, value in sets(main).items() if name in expected}
    problems = [
        f"{name} {found[name]:016x}, not {expected[name]:016x}"
        for name in expected
        if name in found and found[name] != expected[name]
    ]
    if ids is not None:
        for name, wanted in zip(("Uid", "Gid"), ids, strict=True):
            if any(int(number) != wanted for number in main[name].split()):
                problems.append(f"{name} {main[name]!r}, not {wanted} everywhere")
    for task in os.listdir("/proc/self/task"):
        try:
            held = sets(status(f"/proc/self/task/{task}/status"))
        except FileNotFoundError:
            continue  # that thread has ended
        extra = (held["CapEff"] | held["CapPrm"]) & ~keep
        if extra:
            problems.append(f"thread {task} still holds {names(extra)}")
    if problems:
        raise PrivilegeError(
            "the capabilities were not dropped as intended: " + "; ".join(problems)
        )
