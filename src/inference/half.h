// IEEE 754 half precision (binary16), the KServe v2 "FP16" datatype: two bytes per value,
// little-endian in raw contents. The bandwidth model's inputs travel this way
// (learning/features.h): converting is the sender's job, and rounding is to nearest, ties to
// even, like a CPU's conversion instruction, so that every sender produces the same bits.
//
// Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <span>

namespace df::inference {

// `f` as binary16: round to nearest even; magnitudes from 65520 up become infinity, those below
// 2^-25 zero (subnormal halves in between); a NaN stays a (quiet) NaN.
uint16_t FloatToHalf(float f);

// The exact float value of binary16 `h`.
float HalfToFloat(uint16_t h);

// FloatToHalf of every value of `in` into `out` (of the same size). Uses the CPU's F16C
// instructions when it has them (the same bits, NaN payloads aside), else FloatToHalf.
void FloatsToHalves(std::span<const float> in, std::span<uint16_t> out);

// HalfToFloat of every value of `in` into `out` (of the same size), with F16C when the CPU has it.
void HalvesToFloats(std::span<const uint16_t> in, std::span<float> out);

}  // namespace df::inference
