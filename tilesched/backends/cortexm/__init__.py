"""Cortex-M backend: int8 C over CMSIS-DSP for tilesched's memory-planned MCU schedules,
cross-compiled with arm-none-eabi-gcc and run under QEMU (MPS2 AN386 / AN500)."""
