#!/usr/bin/env bash
# Installs dynamically linked armhf programs into an image tree together with the shared libraries
# they need (recursively, from DT_NEEDED) and the dynamic loader — the way an initramfs hook would,
# but from .debs unpacked into a "sysroot" on any host (readelf reads foreign ELF files).
#
# Source it, then:
#   elf_install SYSROOT DEST PATH...   copy SYSROOT/PATH to DEST/PATH for each PATH, plus every library
#                                      they need into DEST/lib/<soname> and the loader to
#                                      DEST/lib/ld-linux-armhf.so.3 (PT_INTERP). Fails naming the
#                                      soname when a library is not in SYSROOT (add its package).
# Libraries go flat into /lib: the loader searches /lib without an ld.so.cache, which a foreign-arch
# tree cannot get from the host's ldconfig.
set -euo pipefail

ELF_LIBDIRS=(lib/arm-linux-gnueabihf usr/lib/arm-linux-gnueabihf lib usr/lib)

elf_die() { echo "[armhf-elf] ERROR: $*" >&2; exit 1; }

# elf_needed FILE: its DT_NEEDED sonames, one per line.
elf_needed() {
  command -v readelf >/dev/null 2>&1 || elf_die "missing tool 'readelf' — install it with: apt-get install binutils"
  readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# elf_find SYSROOT SONAME: the library's path inside SYSROOT (symlinks resolved by cp -L later).
elf_find() {
  local d
  for d in "${ELF_LIBDIRS[@]}"; do
    if [ -e "$1/$d/$2" ]; then echo "$1/$d/$2"; return 0; fi
  done
  return 1
}

elf_install() {
  local sysroot=$1 dest=$2 p so lib
  shift 2
  local -a queue=() done_=()
  mkdir -p "$dest/lib"
  for p in "$@"; do
    [ -f "$sysroot/$p" ] || elf_die "$p is not in the unpacked packages"
    mkdir -p "$(dirname "$dest/$p")"
    cp -L "$sysroot/$p" "$dest/$p"
    queue+=("$sysroot/$p")
  done
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    for so in $(elf_needed "$p"); do
      case " ${done_[*]-} " in *" $so "*) continue ;; esac
      done_+=("$so")
      lib=$(elf_find "$sysroot" "$so") || elf_die "library $so (needed by ${p#"$sysroot"/}) is in none of the unpacked packages"
      cp -L "$lib" "$dest/lib/$so"
      queue+=("$lib")
    done
  done
  # The loader named in PT_INTERP (ld-linux-armhf.so.3 is also a NEEDED of libc, so it is in /lib).
  [ -f "$dest/lib/ld-linux-armhf.so.3" ] || cp -L "$(elf_find "$sysroot" ld-linux-armhf.so.3)" "$dest/lib/ld-linux-armhf.so.3"
}
