#include "inference/half.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace df::inference {
namespace {

uint32_t Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}

float FromBits(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void FloatsToHalvesF16c(std::span<const float> in,
                                                            std::span<uint16_t> out) {
  size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in.data() + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.data() + i), h);
  }
  for (; i < in.size(); ++i) out[i] = FloatToHalf(in[i]);
}

__attribute__((target("avx,f16c"))) void HalvesToFloatsF16c(std::span<const uint16_t> in,
                                                            std::span<float> out) {
  size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in.data() + i));
    _mm256_storeu_ps(out.data() + i, _mm256_cvtph_ps(h));
  }
  for (; i < in.size(); ++i) out[i] = HalfToFloat(in[i]);
}

bool HasF16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

}  // namespace

uint16_t FloatToHalf(float f) {
  uint32_t x = Bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint32_t half;
  if (x >= 0x47800000u) {  // 65536 and up, infinity or NaN: all exponent bits set
    half = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 0x38800000u) {  // below 2^-14, the smallest normal half: subnormal or zero
    // Adding 0.5 puts the half's 10 subnormal mantissa bits at the bottom of the float's
    // mantissa, rounded to nearest even by the FPU's own addition.
    const uint32_t magic = 126u << 23;  // 0.5f
    half = Bits(FromBits(x) + FromBits(magic)) - magic;
  } else {
    const uint32_t odd = (x >> 13) & 1u;  // the kept mantissa's last bit: ties go to even
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;  // rebias, round
    half = x >> 13;  // a carry out of the mantissa bumps the exponent, up to infinity
  }
  return static_cast<uint16_t>(half | sign);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return FromBits(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = static_cast<float>(mantissa) * FromBits(103u << 23);
    return sign != 0 ? -magnitude : magnitude;
  }
  return FromBits(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

void FloatsToHalves(std::span<const float> in, std::span<uint16_t> out) {
#if defined(__x86_64__)
  if (HasF16c()) return FloatsToHalvesF16c(in, out);
#endif
  for (size_t i = 0; i < in.size(); ++i) out[i] = FloatToHalf(in[i]);
}

void HalvesToFloats(std::span<const uint16_t> in, std::span<float> out) {
#if defined(__x86_64__)
  if (HasF16c()) return HalvesToFloatsF16c(in, out);
#endif
  for (size_t i = 0; i < in.size(); ++i) out[i] = HalfToFloat(in[i]);
}

}  // namespace df::inference
