/* tilesched int8 helpers: TFLite's integer arithmetic (MultiplyByQuantizedMultiplier with its rounding,
 * int8 ADD and MUL), the exact LUT softmax and the int8 layernorm of tilesched/semantics/quant.py and
 * semantics/ops.py, bit for bit. Integer only, except the layernorm, whose definition is float64. */
#ifndef TS_KERNELS_H
#define TS_KERNELS_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "arm_math.h"

#define TS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TS_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline int32_t ts_mbqm(int32_t x, int32_t mult, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0;
  const int32_t right = shift > 0 ? 0 : -shift;
  int32_t xs;
  if (left) { /* saturate the left shift, as the int64 reference does before its clip */
    const int64_t wide = (int64_t)x * ((int64_t)1 << left);
    xs = wide > INT32_MAX ? INT32_MAX : wide < INT32_MIN ? INT32_MIN : (int32_t)wide;
  } else {
    xs = x;
  }
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

static inline int32_t ts_sum(const int8_t *a, uint32_t n) {
  int32_t s = 0;
  for (uint32_t i = 0; i < n; i++) s += a[i];
  return s;
}

/* TFLite's int8 ADD: both inputs rescaled to twice the larger input scale (left shift 20), summed, then
 * rescaled to the output */
static inline int8_t ts_add_q(int32_t x, int32_t y, int32_t z1, int32_t m1, int32_t s1, int32_t z2, int32_t m2,
                              int32_t s2, int32_t mo, int32_t so, int32_t zo) {
  const int32_t a = (x - z1) * (1 << 20), b = (y - z2) * (1 << 20);
  const int32_t raw = ts_mbqm(a, m1, s1) + ts_mbqm(b, m2, s2);
  return ts_requant(raw, mo, so, zo, -128, 127);
}

/* TFLite's int8 MUL */
static inline int8_t ts_mul_q(int32_t x, int32_t y, int32_t z1, int32_t z2, int32_t m, int32_t s, int32_t zo) {
  return ts_requant((x - z1) * (y - z2), m, s, zo, -128, 127);
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

/* int8 layernorm of one row: mean and variance exact from the integers, the rest in float64 in the
 * oracle's order of operations; gamma and beta (dequantised) optional; round half away from zero. */
static inline void ts_layernorm_row(const int8_t *x, int8_t *y, int32_t n, int32_t zx, double scale,
                                    const double *gamma, const double *beta, double out_scale, int32_t zy) {
  int64_t s1 = 0, s2 = 0;
  for (int32_t i = 0; i < n; i++) {
    const int64_t c = (int64_t)x[i] - zx;
    s1 += c;
    s2 += c * c;
  }
  const double mean = (double)s1 / (double)n;
  const double var = (double)((int64_t)n * s2 - s1 * s1) / (double)((int64_t)n * n);
  const double denom = sqrt(var * scale * scale + 1e-5);
  for (int32_t i = 0; i < n; i++) {
    double v = ((double)((int64_t)x[i] - zx) - mean) * scale / denom;
    if (gamma) v = v * gamma[i];
    if (beta) v = v + beta[i];
    const double t = v / out_scale;
    double r = floor(fabs(t) + 0.5);
    if (t < 0) r = -r;
    r += zy;
    y[i] = (int8_t)(r < -128.0 ? -128 : r > 127.0 ? 127 : (int32_t)r);
  }
}
#endif
