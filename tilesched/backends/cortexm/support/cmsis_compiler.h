/* tilesched's minimal stand-in for CMSIS-Core's cmsis_compiler.h (GCC, Armv7E-M).
 * CMSIS-DSP includes this header for compiler attributes and the DSP intrinsics;
 * CMSIS-Core itself is not on PyPI, so tilesched maps the few names it needs onto
 * GCC's ACLE builtins (arm_acle.h) and, where ACLE has no builtin, plain C. */
#ifndef TILESCHED_CMSIS_COMPILER_H
#define TILESCHED_CMSIS_COMPILER_H
#include <stdint.h>
#include <arm_acle.h>

#ifndef __ASM
#define __ASM __asm
#endif
#ifndef __INLINE
#define __INLINE inline
#endif
#ifndef __STATIC_INLINE
#define __STATIC_INLINE static inline
#endif
#ifndef __STATIC_FORCEINLINE
#define __STATIC_FORCEINLINE __attribute__((always_inline)) static inline
#endif
#ifndef __ALIGNED
#define __ALIGNED(x) __attribute__((aligned(x)))
#endif
#ifndef __PACKED
#define __PACKED __attribute__((packed, aligned(1)))
#endif
#ifndef __WEAK
#define __WEAK __attribute__((weak))
#endif
#ifndef __RESTRICT
#define __RESTRICT __restrict
#endif

#if defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1)
#define __SSAT(x, n) __ssat((x), (n))
#define __USAT(x, n) __usat((x), (n))
#define __QADD(a, b) __qadd((a), (b))
#define __QSUB(a, b) __qsub((a), (b))
#define __QADD8(a, b) __qadd8((a), (b))
#define __QSUB8(a, b) __qsub8((a), (b))
#define __QADD16(a, b) __qadd16((a), (b))
#define __QSUB16(a, b) __qsub16((a), (b))
#define __SHADD16(a, b) __shadd16((a), (b))
#define __SHSUB16(a, b) __shsub16((a), (b))
#define __QASX(a, b) __qasx((a), (b))
#define __QSAX(a, b) __qsax((a), (b))
#define __SHASX(a, b) __shasx((a), (b))
#define __SHSAX(a, b) __shsax((a), (b))
#define __SMLAD(a, b, c) ((int32_t)__smlad((a), (b), (c)))
#define __SMLADX(a, b, c) ((int32_t)__smladx((a), (b), (c)))
#define __SMLALD(a, b, c) ((int64_t)__smlald((a), (b), (c)))
#define __SMLALDX(a, b, c) ((int64_t)__smlaldx((a), (b), (c)))
#define __SMLSDX(a, b, c) ((int32_t)__smlsdx((a), (b), (c)))
#define __SMUAD(a, b) ((int32_t)__smuad((a), (b)))
#define __SMUADX(a, b) ((int32_t)__smuadx((a), (b)))
#define __SMUSD(a, b) ((int32_t)__smusd((a), (b)))
#define __SMUSDX(a, b) ((int32_t)__smusdx((a), (b)))
#define __SXTB16(x) ((int32_t)__sxtb16((x)))
#define __ROR(x, n) ((uint32_t)(((uint32_t)(x) >> ((n) & 31U)) | ((uint32_t)(x) << ((32U - ((n) & 31U)) & 31U))))
#define __CLZ(x) ((uint8_t)((x) == 0U ? 32U : (uint32_t)__builtin_clz((x))))
#define __PKHBT(a, b, s) ((int32_t)((((uint32_t)(a)) & 0x0000FFFFUL) | ((((uint32_t)(b)) << (s)) & 0xFFFF0000UL)))
#define __PKHTB(a, b, s) ((int32_t)((((uint32_t)(a)) & 0xFFFF0000UL) | ((((uint32_t)(b)) >> (s)) & 0x0000FFFFUL)))
__STATIC_FORCEINLINE int32_t __SMMLA(int32_t a, int32_t b, int32_t c) {
  return (int32_t)((((int64_t)c) << 32) + (int64_t)a * b >> 32);
}
#endif
#endif
