/* Minimal bare-metal start-up for QEMU MPS2 (Cortex-M4/M7) with semihosting.
 * - a 16-entry vector table (reset, faults, SysTick);
 * - copies .data, zeroes .bss, paints the stack with a pattern (peak stack = the
 *   deepest byte no longer holding it);
 * - SysTick runs from the core clock and counts overflows, so ts_ticks() gives the
 *   elapsed ticks; under `qemu -icount shift=0` every instruction advances virtual time
 *   by 1 ns, so ticks * (1e9 / TS_CORE_HZ) is the executed-instruction count. */
#include <stdint.h>
#include <string.h>
#include "ts_runtime.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top;
extern int main(void);
extern void initialise_monitor_handles(void);

#define STACK_PAINT 0xC5C5C5C5u
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define CPACR (*(volatile uint32_t *)0xE000ED88u)

static volatile uint32_t systick_wraps;

void _init(void) {}
void _fini(void) {}

static void fault_handler(void) { ts_fail("hard fault"); }
void SysTick_Handler(void) { systick_wraps++; }

__attribute__((naked, noreturn)) void Reset_Handler(void) {
  /* paint the stack below the current frame before anything uses it */
  __asm volatile(
      "ldr r0, =_stack_bottom\n"
      "ldr r1, =0xC5C5C5C5\n"
      "mov r2, sp\n"
      "sub r2, r2, #64\n"
      "1: cmp r0, r2\n"
      "bhs 2f\n"
      "str r1, [r0], #4\n"
      "b 1b\n"
      "2: bl ts_reset_c\n"
      "b .\n");
}

void ts_timer_start(void) {
  systick_wraps = 0;
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7u; /* enable, interrupt, core clock */
  while (SYST_CVR == 0) {
  } /* wait for the first reload, so the first reading is not LOAD - 0 */
}

uint64_t ts_ticks(void) {
  uint32_t w, v;
  do {
    w = systick_wraps;
    v = SYST_CVR;
  } while (w != systick_wraps);
  return (uint64_t)w * 0x1000000u + (0x00FFFFFFu - v);
}

uint32_t ts_stack_peak(void) {
  const uint32_t *p = &_stack_bottom;
  while (p < &_stack_top && *p == STACK_PAINT) p++;
  return (uint32_t)((const uint8_t *)&_stack_top - (const uint8_t *)p);
}

static int semihost(int op, const void *arg) {
  register int r0 __asm("r0") = op;
  register const void *r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

int ts_write_file(const char *path, const void *data, uint32_t len) {
  /* raw semihosting SYS_OPEN ("wb" = mode 5), SYS_WRITE, SYS_CLOSE: no newlib heap needed */
  uint32_t open_args[3] = {(uint32_t)path, 5u, (uint32_t)strlen(path)};
  int fd = semihost(0x01, open_args);
  if (fd < 0) return -1;
  uint32_t write_args[3] = {(uint32_t)fd, (uint32_t)data, len};
  int left = semihost(0x05, write_args);
  semihost(0x02, &fd);
  return left == 0 ? 0 : -1;
}

void ts_reset_c(void) {
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  CPACR |= 0xFu << 20; /* FPU on: newlib's printf may touch it */
  initialise_monitor_handles();
  exit(main());
}

__attribute__((section(".vectors"), used)) void (*const ts_vectors[16])(void) = {
    (void (*)(void))&_stack_top, Reset_Handler, fault_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler, SysTick_Handler,
};
