#!/usr/bin/env bash
# Builds a board's SD card image for an emulated (or real) Allwinner board: Debian's armhf u-boot-sunxi
# written at 8 KiB, and a FAT partition holding a U-Boot environment (uboot.env) with the board's MAC
# (ethaddr) and boot_targets trimmed to the network, as an operator would set them on a real board.
#
# Usage: scripts/lab-sunxi/make-sd.sh OUT MAC [--board NAME] [--targets "pxe dhcp"] [--set VAR=VALUE]...
#   OUT        the image to write (64 MiB, sparse), e.g. /var/lib/dozen/lab/bpi-1.sd.img
#   MAC        the board's MAC, e.g. 02:88:00:00:00:01 (U-Boot's ethaddr; U-Boot hands it to Linux in
#              the device tree, so the kernel's DHCP uses it too)
#   --board    the u-boot-sunxi build (a directory of /usr/lib/u-boot in the package; default
#              Bananapi_M2_Ultra; also Bananapi, Bananapro, Cubieboard, orangepi_plus, ...; bookworm's
#              package has no orangepi_pc build)
#   --targets  boot_targets (default "pxe dhcp": pxelinux first, then the DHCP boot script; the build's
#              "fel mmc_auto scsi0 usb0 pxe dhcp" first scans the SD card, SATA and USB and boots
#              whatever it finds there; about 0.4 s when they hold nothing, under QEMU)
#   --set      any other variable, e.g. --set bootdelay=0 (repeatable; an empty value deletes it)
#
# Layout: MBR, u-boot-sunxi-with-spl.bin at 8 KiB (SPL + U-Boot, < 1 MiB), one bootable FAT16 partition
# from 1 MiB to the end (label DOZENBOOT) with /uboot.env. That is where this U-Boot build keeps its
# environment: ENV_IS_IN_FAT, interface "mmc", device/partition ":auto" (the MMC device U-Boot was
# loaded from, 0 = the SD card, then its first bootable partition), file "uboot.env", CONFIG_ENV_SIZE
# 0x10000, not redundant (sunxi defaults in u-boot v2023.01's env/Kconfig, unchanged up to v2025.01;
# Bananapi_M2_Ultra_defconfig overrides none; "uboot.env" and "0:auto" are in the binary's strings).
# A wrong size shows on the console as "Loading Environment from FAT... *** Warning - bad CRC".
# A FAT environment replaces U-Boot's default one whole (it is not merged), so uboot.env is the
# binary's own default environment, read out of the binary, plus the overrides. Nothing is mounted:
# mkenvimage (u-boot-tools) and mtools do the work.
#
# Idempotent: OUT is left alone when OUT.inputs records the same inputs (u-boot-sunxi .deb, board, MAC,
# overrides, this script) and OUT's own checksum (a board that ran `saveenv` changed it: rebuilt).
# The u-boot-sunxi .deb is fetched once into .cache/lab-sunxi/apt-armhf (scripts/lab-sunxi/lib.sh).
# Reproducible: same inputs, same bytes (fixed volume serial, disk signature and file times).
set -euo pipefail
SUNXI_NAME=make-sd
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
OUT= MAC= BOARD=Bananapi_M2_Ultra TARGETS="pxe dhcp"
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=${2:?--board needs a name}; shift ;;
    --targets) TARGETS=${2:?--targets needs a list}; shift ;;
    --set) [[ "${2:-}" == [A-Za-z_]*=* ]] || die "--set needs VAR=VALUE"; SETS+=("$2"); shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) if [ -z "$OUT" ]; then OUT=$1; elif [ -z "$MAC" ]; then MAC=$1; else die "too many arguments (try --help)"; fi ;;
  esac
  shift
done
[ -n "$OUT" ] && [ -n "$MAC" ] || { usage >&2; exit 2; }
MAC=$(sunxi_check_mac "$MAC")
[[ "$BOARD" =~ ^[A-Za-z0-9_.+-]+$ ]] || die "bad board name $BOARD"
need mkenvimage u-boot-tools
need dpkg-deb dpkg
need sha256sum coreutils

SD_MIB=64
PART_START=2048                                   # sectors: the partition starts at 1 MiB
PART_SECTORS=$((SD_MIB * 2048 - PART_START))
ENV_SIZE=${DOZEN_UBOOT_ENV_SIZE:-0x10000}
EPOCH=${SOURCE_DATE_EPOCH:-315532800}             # 1980-01-01, FAT's earliest date

UDEB=$(sunxi_fetch armhf u-boot-sunxi)
UDIR=$(sunxi_unpack "$UDEB")
UBIN=$UDIR/usr/lib/u-boot/$BOARD/u-boot-sunxi-with-spl.bin
[ -f "$UBIN" ] || die "$(basename "$UDEB") has no $BOARD build (have: $(ls "$UDIR/usr/lib/u-boot" | tr '\n' ' '))"

INPUTS=$( {
  basename "$UDEB"; echo "$BOARD $MAC targets=$TARGETS epoch=$EPOCH env=$ENV_SIZE"; printf 'set %s\n' "${SETS[@]}"
  sha256sum <"$0"; sha256sum <"$SUNXI_LIB_DIR/lib.sh"
} | sha256sum | cut -c1-64)
if [ -f "$OUT" ] && [ "$(sed -n 1p "$OUT.inputs" 2>/dev/null)" = "$INPUTS" ] &&
  [ "$(sed -n 2p "$OUT.inputs")" = "$(sha256sum <"$OUT" | cut -c1-64)" ]; then
  log "up to date: $OUT ($MAC)"
  exit 0
fi

OUT_DIR=$(dirname "$OUT")
mkdir -p "$OUT_DIR"
W=$(mktemp -d "$OUT_DIR/.make-sd.XXXXXX")
trap 'rm -rf "$W"' EXIT

# --- the environment: the binary's default environment, then the overrides --------------------
# The default environment is one NUL-separated block starting "bootcmd=" and ending in "\0\0".
off=$(grep -obUaP '\x00bootcmd=' "$UBIN" | head -1 | cut -d: -f1) || true
[ -n "$off" ] || die "no default environment (bootcmd=) in $UBIN"
dd if="$UBIN" iflag=skip_bytes,count_bytes skip=$((off + 1)) count=65536 bs=64k status=none | tr '\0' '\n' >"$W/block"
awk '$0 == "" { exit } { print }' "$W/block" >"$W/default.env"
grep -q '^distro_bootcmd=' "$W/default.env" && grep -q '^boot_targets=' "$W/default.env" ||
  die "the default environment read from $UBIN looks wrong (no distro_bootcmd/boot_targets)"
{
  echo "ethaddr=$MAC"
  echo "boot_targets=$TARGETS"
  for s in "${SETS[@]}"; do echo "$s"; done
} >"$W/overrides.env"
# The last assignment of a variable wins; it replaces the default line; an empty value deletes it.
awk -F= 'NR == FNR { i = index($0, "="); v[$1] = substr($0, i + 1); if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }; next }
  !($1 in v) { print }
  END { for (k = 1; k <= n; k++) if (v[order[k]] != "") print order[k] "=" v[order[k]] }' \
  "$W/overrides.env" "$W/default.env" >"$W/uboot.env.txt"
mkenvimage -s "$ENV_SIZE" -o "$W/uboot.env" "$W/uboot.env.txt"

# --- the card ----------------------------------------------------------------------------------
sunxi_mtools
truncate -s "${SD_MIB}M" "$W/sd.img"
le32() { printf "$(printf '\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"; }
sig=$((0x${MAC//:/} & 0xffffffff))
{
  le32 "$sig"                                           # 440: disk signature (from the MAC)
  printf '\x00\x00'                                     # 444
  printf '\x80\xfe\xff\xff\x0e\xfe\xff\xff'             # 446: bootable, FAT16 LBA, CHS unused
  le32 "$PART_START"
  le32 "$PART_SECTORS"
} | dd of="$W/sd.img" bs=1 seek=440 conv=notrunc status=none
printf '\x55\xaa' | dd of="$W/sd.img" bs=1 seek=510 conv=notrunc status=none
dd if="$UBIN" of="$W/sd.img" bs=1k seek=8 conv=notrunc status=none
[ $((8192 + $(stat -c %s "$UBIN"))) -le $((PART_START * 512)) ] || die "$UBIN overlaps the FAT partition"
export MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=$EPOCH
touch -d "@$EPOCH" "$W/uboot.env"
mformat -i "$W/sd.img@@$((PART_START * 512))" -T "$PART_SECTORS" -h 64 -s 32 -H "$PART_START" \
  -N "$(printf '%08x' "$sig")" -v DOZENBOOT :: || die "mformat failed"
mcopy -m -i "$W/sd.img@@$((PART_START * 512))" "$W/uboot.env" ::uboot.env || die "mcopy failed"
mdir -i "$W/sd.img@@$((PART_START * 512))" ::uboot.env >/dev/null || die "uboot.env is not on the card"

mv -f "$W/sd.img" "$OUT"
printf '%s\n%s\n' "$INPUTS" "$(sha256sum <"$OUT" | cut -c1-64)" >"$OUT.inputs"
EFF_MAC=$(sed -n 's/^ethaddr=//p' "$W/uboot.env.txt")
log "wrote $OUT: $(basename "$UDEB" .deb) $BOARD at 8 KiB, uboot.env (ethaddr=${EFF_MAC:-unset: U-Boot derives it from the SID}, boot_targets=$TARGETS${SETS:+; also ${SETS[*]}})"
