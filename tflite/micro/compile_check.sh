#!/usr/bin/env bash
# Compile an exported micro model's C array for a Cortex-M4F (nRF52840, as on an Arduino Nano 33
# BLE Sense) and link it into a minimal program that reads the model bytes, then print where the
# array lands: it must be in flash (.rodata), 16-byte aligned, as long as the .tflite file.
# TFLM itself is not linked (its sources are not part of this project).
#
#   tflite/micro/compile_check.sh EXPORT_DIR      # the folder holding model_data.cc/.h, model.tflite
#
# Needs the GNU Arm Embedded toolchain (Debian: apt-get install gcc-arm-none-eabi).
set -euo pipefail
export_dir=$(cd "$1" && pwd)
tflite=$(ls "$export_dir"/*.tflite | head -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/main.cc" <<'CC'
#include <cstdint>
#include "model_data.h"
volatile unsigned int sink;
int main() {
  unsigned int sum = 0;
  for (unsigned int i = 0; i < g_model_len; ++i) sum += g_model[i];
  sink = sum + (reinterpret_cast<uintptr_t>(g_model) & 15u);
  return 0;
}
CC
flags=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -std=c++17 -I "$export_dir")
arm-none-eabi-g++ "${flags[@]}" -c "$export_dir/model_data.cc" -o "$work/model_data.o"
arm-none-eabi-g++ "${flags[@]}" -c "$work/main.cc" -o "$work/main.o"
arm-none-eabi-g++ "${flags[@]}" --specs=nosys.specs "$work/main.o" "$work/model_data.o" -o "$work/fw.elf"
arm-none-eabi-size "$work/fw.elf"
read -r address size <<<"$(arm-none-eabi-nm -S "$work/fw.elf" | awk '$4 == "g_model" {print $1, $2}')"
section=$(arm-none-eabi-nm "$work/fw.elf" | awk '$3 == "g_model" {print $2}')
bytes=$((16#$size))
expected=$(stat -c %s "$tflite")
echo "g_model: $bytes bytes at 0x$address (section type $section: R = read-only, flash)"
[[ "$section" == "R" ]] || { echo "g_model is not read-only data" >&2; exit 1; }
(( 16#$address % 16 == 0 )) || { echo "g_model is not 16-byte aligned" >&2; exit 1; }
(( bytes == expected )) || { echo "g_model holds $bytes bytes, $tflite has $expected" >&2; exit 1; }
echo "ok: flash-resident, 16-byte aligned, $expected bytes as $(basename "$tflite")"
