/* tilesched int8 helpers: TFLite requantisation (MultiplyByQuantizedMultiplier with its
 * rounding) and the exact LUT softmax; see tilesched/backends/cortexm/reference.py. */
#ifndef TS_KERNELS_H
#define TS_KERNELS_H
#include <stdint.h>
#include "arm_math.h"

static inline int32_t ts_mbqm(int32_t x, int32_t mult, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0;
  const int32_t right = shift > 0 ? 0 : -shift;
  const int32_t xs = (int32_t)((uint32_t)x << left);
  int32_t high;
  if (xs == INT32_MIN && mult == INT32_MIN) {
    high = INT32_MAX;
  } else {
    const int64_t ab = (int64_t)xs * (int64_t)mult;
    const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    high = (int32_t)((ab + nudge) / (1LL << 31));
  }
  const int32_t mask = (int32_t)((1U << right) - 1U);
  const int32_t rem = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (rem > threshold ? 1 : 0);
}

static inline int8_t ts_requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
  int32_t v = ts_mbqm(acc, mult, shift) + zp;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  return (int8_t)v;
}

static inline int32_t ts_dot(const int8_t *a, const int8_t *b, uint32_t n) {
  q31_t r;
  arm_dot_prod_q7((const q7_t *)a, (const q7_t *)b, n, &r);
  return (int32_t)r;
}

/* probabilities (scale 1/256, zero point -128) of one row of int8 scores */
static inline void ts_softmax_row(const int8_t *s, int8_t *p, uint32_t n, const uint32_t *lut) {
  int32_t mx = -128;
  for (uint32_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
  uint32_t total = 0;
  for (uint32_t j = 0; j < n; j++) total += lut[mx - s[j]];
  for (uint32_t j = 0; j < n; j++) {
    int32_t v = (int32_t)((256U * lut[mx - s[j]] + total / 2U) / total) - 128;
    p[j] = (int8_t)(v > 127 ? 127 : v);
  }
}
#endif
