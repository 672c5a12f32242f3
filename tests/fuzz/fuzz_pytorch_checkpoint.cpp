// Fuzzes the PyTorch checkpoint reader. The first input byte picks the layer:
// - even: the rest is a whole file for agla::io::read_pytorch_checkpoint (the strict zip reader,
//   then the weights-only unpickler over its records);
// - odd: the rest is a raw pickle for the weights-only unpickler alone, with storages synthesised
//   (zeros) for what it asks, so mutations reach the opcodes without having to keep a zip intact.
// Either an agla::Error is thrown or every tensor handed out lies inside its storage: each one of
// at most 2^20 elements is copied out, which ASan checks byte by byte.
#include <ATen/Parallel.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "agla/error.hpp"
#include "agla/io/pytorch_checkpoint.hpp"
#include "scratch.hpp"

namespace {

void touch(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0 || t.numel() > (int64_t{1} << 20)) return;
  const at::Tensor c = t.contiguous();
  const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
  uint64_t sum = 0;
  for (size_t i = 0; i < static_cast<size_t>(c.numel()) * c.element_size(); ++i) sum += bytes[i];
  volatile uint64_t sink = sum;
  (void)sink;
}

void walk(const agla::io::PickleValue& v, int depth) {
  using Kind = agla::io::PickleValue::Kind;
  if (depth > agla::io::kMaxPickleDepth + 1) __builtin_trap();  // the nesting bound failed
  if (v.is(Kind::kTensor) || v.is(Kind::kStorage)) touch(v.as_tensor());
  if (v.is(Kind::kTuple) || v.is(Kind::kList)) {
    for (const auto& item : v.items()) walk(item, depth + 1);
  }
  if (v.is(Kind::kDict)) {
    for (const auto& [key, value] : v.entries()) {
      walk(key, depth + 1);
      walk(value, depth + 1);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool one_thread = [] {
    at::set_num_threads(1);
    return true;
  }();
  (void)one_thread;
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    static const std::string path = agla_fuzz::scratch_path("input.pt");
    agla_fuzz::write_file(path, data + 1, size - 1);
    try {
      walk(agla::io::read_pytorch_pickle(path), 0);
    } catch (const agla::Error&) {
    }
    try {
      for (const auto& [name, tensor] : agla::io::read_pytorch_checkpoint(path)) touch(tensor);
    } catch (const agla::Error&) {
    }
    return 0;
  }
  auto storage = [](const std::string&, at::ScalarType dtype, int64_t numel) {
    agla::check<agla::FormatError>(numel <= (int64_t{1} << 16), "fuzz: storage too large");
    return at::zeros({numel}, at::TensorOptions().dtype(dtype));
  };
  try {
    agla::io::detail::WeightsOnlyUnpickler unpickler(data + 1, size - 1, "fuzz", storage);
    walk(unpickler.run(), 0);
  } catch (const agla::Error&) {
  }
  return 0;
}
