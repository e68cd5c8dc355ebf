#!/usr/bin/python3
"""Lays out the .deb's tree from Cargo.toml's [package.metadata.deb], for
`dpkg-deb --build` (scripts/package-deb).

It makes what cargo-deb made from the same table, so that the package's
contents stay as they were without compiling cargo-deb on every clean
machine (it took 3 to 5 minutes of CI): the same files, modes and
`control` fields (cargo-deb's wrapping of the description at 79 columns,
`Installed-Size` with its 1 KiB per file, `$auto` resolved by
dpkg-shlibdeps without libgcc), the binary stripped as cargo-deb strips it,
man pages gzipped with a `.gz` suffix, a generated
`usr/share/doc/PACKAGE/copyright`, and every file's time set to the day of
Cargo.toml's modification (or SOURCE_DATE_EPOCH).

Usage: deb_tree.py ROOT TARGET_DIR [PROFILE_DIR]  (run from the crate's
directory; `target/release/` in the assets names TARGET_DIR/PROFILE_DIR,
PROFILE_DIR being `release` unless given: `debug` for the dev profile).
Prints the .deb's file name (PACKAGE_VERSION_ARCH.deb).
"""

import glob
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib


def wrap(text, length=79):
    """cargo-deb's split_by_chars: words joined while the line plus the
    next word stays under `length`; a blank line becomes '.'."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            lines.append(".")
            continue
        line = line.replace("\t", "  ")
        cur, has_words = "", False
        for word in line.split(" "):
            if not cur.strip():
                cur = cur + " " + word if has_words else cur + word
                has_words = True
                continue
            if len(cur) + len(word) >= length:
                lines.append(cur)
                cur = word
            else:
                cur += " " + word
        lines.append(cur if cur.strip() else ".")
    return lines


def resolve_assets(meta, target_dir, profile_dir="release"):
    """(source, destination relative to ROOT, mode) for every asset, globs
    expanded; `target/release/` is the built profile's folder in cargo's
    real target directory."""
    out = []
    for src, dest, mode in meta["assets"]:
        if src.startswith("target/release/"):
            src = os.path.join(target_dir, profile_dir, src[len("target/release/"):])
        sources = sorted(glob.glob(src)) if any(c in src for c in "*?[") else [src]
        if not sources:
            sys.exit(f"deb_tree: no file matches the asset {src}")
        for s in sources:
            if not os.path.isfile(s):
                continue
            d = dest + os.path.basename(s) if dest.endswith("/") else dest
            out.append((s, d, int(mode, 8)))
    return out


def place(root, src, dest, mode):
    """Copies one asset (a man page gzipped, an ELF file stripped) and
    returns its path under ROOT."""
    path = os.path.join(root, dest)
    if dest.startswith("usr/share/man/") and not dest.endswith(".gz"):
        path += ".gz"
        with open(src, "rb") as f, open(path_dir(path), "wb") as g:
            g.write(gzip.compress(f.read(), compresslevel=9, mtime=0))
    else:
        shutil.copyfile(src, path_dir(path))
        with open(path, "rb") as f:
            elf = f.read(4) == b"\x7fELF"
        if elf:
            subprocess.run(["strip", "--strip-unneeded", "--remove-section=.comment",
                            "--remove-section=.note", path], check=True)
    os.chmod(path, mode)
    return path


def path_dir(path):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return path


def depends(meta, binaries):
    """The Depends field: `$auto` is what dpkg-shlibdeps finds the binaries
    need (libgcc left out: always there)."""
    words = []
    for dep in (d.strip() for d in meta.get("depends", "$auto").split(",")):
        if dep != "$auto":
            words.append(dep)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            os.mkdir(os.path.join(tmp, "debian"))
            open(os.path.join(tmp, "debian", "control"), "w").close()
            out = subprocess.run(["dpkg-shlibdeps", "-xlibgcc", "-O", *binaries], cwd=tmp,
                                 check=True, capture_output=True, text=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("shlibs:Depends="))
        words += [d.strip() for d in line.split("=", 1)[1].split(",")
                  if d.strip() and not d.strip().startswith(("libgcc-", "libgcc1"))]
    return ", ".join(words)


def control(pkg, meta, arch, installed_kib, deps):
    fields = [("Package", pkg["name"]), ("Version", pkg["version"] + "-1"),
              ("Architecture", arch), ("Section", meta.get("section")),
              ("Priority", meta.get("priority", "optional")),
              ("Maintainer", meta.get("maintainer")),
              ("Installed-Size", str(installed_kib)), ("Depends", deps)]
    text = "".join(f"{k}: {v}\n" for k, v in fields if v)
    text += "Description:" + "".join(f" {l}\n" for l in wrap(pkg["description"]))
    text += "".join(f" {l}\n" for l in wrap(meta["extended-description"]))
    # cargo-deb ended the file with an empty line.
    return text + "\n"


def main():
    root, target_dir = sys.argv[1], sys.argv[2]
    profile_dir = sys.argv[3] if len(sys.argv) > 3 else "release"
    with open("Cargo.toml", "rb") as f:
        pkg = tomllib.load(f)["package"]
    meta = pkg["metadata"]["deb"]
    placed = [place(root, s, d, m) for s, d, m in resolve_assets(meta, target_dir, profile_dir)]
    copyright_path = os.path.join(root, "usr/share/doc", pkg["name"], "copyright")
    if not os.path.exists(copyright_path):
        with open(path_dir(copyright_path), "w") as f:
            f.write("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                    f"Upstream-Name: {pkg['name']}\n"
                    f"Comment: Copyright information missing (maintainer: {meta['maintainer']})\n"
                    f"License: {pkg['license']}\n")
        os.chmod(copyright_path, 0o644)
        placed.append(copyright_path)
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # cargo-deb's estimate: each file's size plus 1 KiB, in KiB rounded down.
    kib = sum((os.path.getsize(p) + 2047) // 1024 for p in placed)
    elves = [p for p in placed if open(p, "rb").read(4) == b"\x7fELF"]
    with open(path_dir(os.path.join(root, "DEBIAN", "control")), "w") as f:
        f.write(control(pkg, meta, arch, kib, depends(meta, elves)))
    when = int(os.environ.get("SOURCE_DATE_EPOCH") or
               os.stat("Cargo.toml").st_mtime // 86400 * 86400)
    for d, dirs, files in os.walk(root):
        os.chmod(d, 0o755)
        for name in dirs + files:
            os.utime(os.path.join(d, name), (when, when))
    os.utime(root, (when, when))
    print(f"{pkg['name']}_{pkg['version']}-1_{arch}.deb")


if __name__ == "__main__":
    main()
