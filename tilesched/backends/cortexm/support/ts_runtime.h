/* tilesched's bare-metal runtime: timing, stack peak, failure exit. */
#ifndef TS_RUNTIME_H
#define TS_RUNTIME_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
void ts_timer_start(void);
uint64_t ts_ticks(void);
uint32_t ts_stack_peak(void);
int ts_write_file(const char *path, const void *data, uint32_t len);
static inline void ts_fail(const char *why) {
  printf("FAIL %s\n", why);
  exit(3);
}
#endif
