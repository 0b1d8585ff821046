// Tensor data types of the KServe v2 protocol: the wire names ("FP32") that requests and
// responses carry, the model config's enum (TYPE_FP32), and element sizes. Torch-free, shared by
// the server and the client. Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "model_config.pb.h"

namespace df::inference {

// "FP32" for TYPE_FP32, ..., "BYTES" for TYPE_STRING; "" for TYPE_INVALID or an unknown value.
std::string DatatypeName(::inference::DataType type);

// The inverse of DatatypeName; TYPE_INVALID for an unknown name (names are case-sensitive, as
// in the spec).
::inference::DataType ParseDatatypeName(std::string_view name);

// Bytes of one element in raw form (FP32: 4, BOOL: 1, FP16: 2); 0 for TYPE_STRING (variable
// length) and TYPE_INVALID.
size_t ElementSizeBytes(::inference::DataType type);

}  // namespace df::inference
