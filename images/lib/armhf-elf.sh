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
#   elf_install_arch ARCH SYSROOT DEST PATH...
#                                      the same for any Debian architecture (armhf, arm64, ...): the
#                                      libraries are looked up under ARCH's multiarch directories and
#                                      the loader is the one the programs' PT_INTERP names (e.g.
#                                      /lib/ld-linux-aarch64.so.1), installed at that path.
#                                      elf_install is elf_install_arch armhf.
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

# elf_multiarch ARCH: Debian's multiarch triplet for ARCH.
elf_multiarch() {
  case "$1" in
    armhf) echo arm-linux-gnueabihf ;;
    armel) echo arm-linux-gnueabi ;;
    arm64) echo aarch64-linux-gnu ;;
    amd64) echo x86_64-linux-gnu ;;
    i386) echo i386-linux-gnu ;;
    riscv64) echo riscv64-linux-gnu ;;
    *) elf_die "unknown architecture $1 (no multiarch triplet)" ;;
  esac
}

# elf_interp FILE: the program interpreter (PT_INTERP) FILE asks for, empty for a static program.
elf_interp() {
  readelf -l "$1" 2>/dev/null | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p' | head -1
}

elf_install_arch() {
  local arch=$1 sysroot=$2 dest=$3 p interp lib
  shift 3
  local triplet saved=("${ELF_LIBDIRS[@]}")
  triplet=$(elf_multiarch "$arch")
  ELF_LIBDIRS=("lib/$triplet" "usr/lib/$triplet" lib usr/lib)
  local -a interps=()
  for p in "$@"; do
    [ -f "$sysroot/$p" ] || elf_die "$p is not in the unpacked packages"
    interp=$(elf_interp "$sysroot/$p")
    [ -n "$interp" ] && interps+=("$interp")
  done
  # The libraries (the loader is usually a NEEDED of libc too, so it lands in /lib as well).
  elf_install_libs "$sysroot" "$dest" "$@"
  for interp in ${interps[@]+"${interps[@]}"}; do
    [ -f "$dest$interp" ] && continue
    lib=$(elf_find "$sysroot" "$(basename "$interp")") || elf_die "the loader $interp is in none of the unpacked packages"
    mkdir -p "$(dirname "$dest$interp")"
    cp -L "$lib" "$dest$interp"
  done
  ELF_LIBDIRS=("${saved[@]}")
}

# elf_install_libs SYSROOT DEST PATH...: elf_install without the armhf loader step (ELF_LIBDIRS as set).
elf_install_libs() {
  local sysroot=$1 dest=$2 p so lib
  shift 2
  local -a queue=() done_=()
  mkdir -p "$dest/lib"
  for p in "$@"; do
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
}
