#!/usr/bin/env python3
"""Builds the root filesystem of the anima-sandbox-runner image (deploy/docker/Dockerfile, target
runner) from the Debian stage it runs in:

  runner_rootfs.py DEST BINARY PACKAGE...

DEST gets BINARY as /usr/local/bin/<its name>, the files of PACKAGE... (what the generated code
is built and tested with: python3, g++) and of every package they or BINARY's shared libraries
need (Depends and Pre-Depends, the first installed alternative, followed to the end), the
dynamic linker's cache for those libraries, /etc/passwd and /etc/group with the runner's user
(65532), an empty /tmp and /workspace; nothing else. Left out on purpose: the shells, the
package manager and the command-line tools a Debian system carries (EXCLUDED), which neither
python3 nor g++ runs; documentation but the copyright files. If one of those came in anyway
through a dependency, the build fails rather than ship it.

Debian packages record some files under /bin, /lib, /lib64 and /sbin, which bookworm's merged /usr
makes symlinks into /usr: DEST gets the same symlinks and each file its place under /usr.
Exits 1 with the reason when BINARY needs a library that no installed package provides."""
import os
import shutil
import subprocess
import sys

# Never copied, though packages name them as dependencies: what a shell session or the package
# manager uses, not a compiler or an interpreter.
EXCLUDED = {
    "bash", "dash", "coreutils", "debianutils", "diffutils", "findutils", "grep", "sed", "gzip", "tar",
    "util-linux", "mount", "bsdutils", "login", "passwd", "hostname", "ncurses-bin", "sensible-utils",
    "dpkg", "debconf", "perl-base", "init-system-helpers", "install-info", "libc-bin", "base-files",
    "base-passwd",
}
# If any of these is in DEST at the end, something above let a shell through.
SHELLS = ("bin/sh", "bin/bash", "bin/dash", "bin/rbash", "bin/busybox")
# Documentation, manuals, translations: DEST keeps only /usr/share/doc/*/copyright.
SKIPPED_DIRS = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
                "/usr/share/lintian/", "/usr/share/bug/", "/usr/share/doc-base/")
RUNNER_UID = 65532


def fail(message):
    print(f"runner_rootfs: {message}", file=sys.stderr)
    sys.exit(1)


def installed_packages():
    """name -> (provides, dependency groups) for every installed package."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\t${Provides}\t${Pre-Depends}, ${Depends}\n"],
        check=True, capture_output=True, text=True).stdout
    packages, providers = {}, {}
    for line in out.splitlines():
        name, status, provides, depends = line.split("\t")
        if status != "installed":
            continue
        groups = [[bare(alt) for alt in group.split("|")] for group in depends.split(",") if group.strip()]
        packages[name] = groups
        for p in provides.split(","):
            if p.strip():
                providers.setdefault(bare(p), []).append(name)
    return packages, providers


def bare(relation):
    """'libc6:any (>= 2.34)' -> 'libc6'."""
    return relation.split("(")[0].split("[")[0].strip().split(":")[0]


def closure(roots, packages, providers):
    """Every installed package the roots need, by Depends and Pre-Depends, but EXCLUDED."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in EXCLUDED:
            continue
        if name not in packages:
            fail(f"package {name} is not installed")
        seen.add(name)
        for group in packages[name]:
            for alt in group:
                chosen = alt if alt in packages else next(iter(providers.get(alt, [])), None)
                if chosen:
                    todo.append(chosen)
                    break
    return seen


def library_packages(binary):
    """The packages that hold the shared libraries `binary` loads (as ldd resolves them)."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    owners = set()
    for line in out.splitlines():
        if "not found" in line:
            fail(f"{binary} needs {line.split()[0]}, which no installed package provides")
        fields = line.split()
        path = fields[2] if "=>" in fields else fields[0]
        if not path.startswith("/"):
            continue  # linux-vdso.so.1, the kernel's
        owners.add(owner(path))
    return owners


def owner(path):
    """The installed package that ships `path`, under any of its merged-/usr names."""
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    candidates = {path, real, real.removeprefix("/usr")}
    for candidate in sorted(candidates):
        result = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if not line.startswith("diversion") and ": " in line:
                return line.split(": ", 1)[0].split(",")[0].split(":")[0]
    fail(f"no installed package ships {path}")


def files_of(package):
    out = subprocess.run(["dpkg-query", "-L", package], check=True, capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if p.startswith("/")]


def wanted(path):
    if path.startswith(SKIPPED_DIRS):
        return path.startswith("/usr/share/doc/") and path.endswith("/copyright")
    return True


def copy(path, dest):
    """Copies one file, symlink or directory into dest, at its place under merged /usr."""
    if not os.path.lexists(path):
        return  # removed by the image's dpkg path-excludes (documentation of the slim image)
    parent = os.path.realpath(os.path.dirname(path))
    target = dest + os.path.join(parent, os.path.basename(path))
    if os.path.isdir(path) and not os.path.islink(path):
        os.makedirs(target, exist_ok=True)
        shutil.copystat(path, target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        return
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
    else:
        shutil.copy2(path, target)


def main():
    if len(sys.argv) < 4:
        fail("usage: runner_rootfs.py DEST BINARY PACKAGE...")
    dest, binary, roots = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3:]
    if os.path.exists(dest) and os.listdir(dest):
        fail(f"{dest} is not empty")
    os.makedirs(dest, exist_ok=True)
    # The merged-/usr symlinks of this system's root (bin -> usr/bin, lib64 -> usr/lib64, ...).
    for name in sorted(os.listdir("/")):
        link = os.path.join("/", name)
        if os.path.islink(link) and os.readlink(link).startswith("usr/"):
            os.makedirs(os.path.join(dest, os.readlink(link)), exist_ok=True)
            os.symlink(os.readlink(link), os.path.join(dest, name))

    packages, providers = installed_packages()
    chosen = closure(set(roots) | library_packages(binary), packages, providers)
    count = 0
    for package in sorted(chosen):
        for path in files_of(package):
            if wanted(path):
                copy(path, dest)
                count += 1
    os.makedirs(f"{dest}/usr/local/bin", exist_ok=True)
    shutil.copy2(binary, f"{dest}/usr/local/bin/{os.path.basename(binary)}")

    # The dynamic linker's cache, of exactly what DEST holds.
    os.makedirs(f"{dest}/etc", exist_ok=True)
    subprocess.run(["ldconfig", "-r", dest], check=True)
    with open(f"{dest}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"runner:x:{RUNNER_UID}:{RUNNER_UID}:anima-sandbox-runner:/workspace:/usr/sbin/nologin\n")
    with open(f"{dest}/etc/group", "w") as f:
        f.write(f"root:x:0:\nrunner:x:{RUNNER_UID}:\n")
    os.makedirs(f"{dest}/tmp", exist_ok=True)
    os.chmod(f"{dest}/tmp", 0o1777)
    os.makedirs(f"{dest}/workspace", exist_ok=True)
    os.chmod(f"{dest}/workspace", 0o700)
    os.chown(f"{dest}/workspace", RUNNER_UID, RUNNER_UID)

    shells = [s for s in SHELLS if os.path.lexists(f"{dest}/usr/{s}")]
    if shells:
        fail(f"a shell came in with the packages: {', '.join(shells)}")
    print(f"runner_rootfs: {len(chosen)} packages, {count} paths: {' '.join(sorted(chosen))}")


if __name__ == "__main__":
    main()
