#include "inference/datatype.h"

#include <array>
#include <utility>

namespace df::inference {
namespace {

using ::inference::DataType;

struct DatatypeInfo {
  DataType type;
  const char* name;
  size_t size_bytes;
};

constexpr std::array<DatatypeInfo, 14> kDatatypes = {{
    {::inference::TYPE_BOOL, "BOOL", 1},
    {::inference::TYPE_UINT8, "UINT8", 1},
    {::inference::TYPE_UINT16, "UINT16", 2},
    {::inference::TYPE_UINT32, "UINT32", 4},
    {::inference::TYPE_UINT64, "UINT64", 8},
    {::inference::TYPE_INT8, "INT8", 1},
    {::inference::TYPE_INT16, "INT16", 2},
    {::inference::TYPE_INT32, "INT32", 4},
    {::inference::TYPE_INT64, "INT64", 8},
    {::inference::TYPE_FP16, "FP16", 2},
    {::inference::TYPE_FP32, "FP32", 4},
    {::inference::TYPE_FP64, "FP64", 8},
    {::inference::TYPE_STRING, "BYTES", 0},
    {::inference::TYPE_BF16, "BF16", 2},
}};

const DatatypeInfo* Find(DataType type) {
  for (const auto& d : kDatatypes) {
    if (d.type == type) return &d;
  }
  return nullptr;
}

}  // namespace

std::string DatatypeName(DataType type) {
  const DatatypeInfo* d = Find(type);
  return d == nullptr ? "" : d->name;
}

DataType ParseDatatypeName(std::string_view name) {
  for (const auto& d : kDatatypes) {
    if (name == d.name) return d.type;
  }
  return ::inference::TYPE_INVALID;
}

size_t ElementSizeBytes(DataType type) {
  const DatatypeInfo* d = Find(type);
  return d == nullptr ? 0 : d->size_bytes;
}

}  // namespace df::inference
