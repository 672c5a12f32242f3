// JPEG decoding time of a 640x480 photo (tests/data/image_jpeg/bench_640x480.jpg, Pillow's defaults:
// quality 75, 4:2:0), all measured in this one process:
//   BM_JpegDecodeAgla    agla::io::decode_image: libjpeg-turbo as Pillow uses it (accurate integer
//                        IDCT, fancy upsampling), Pillow's exact pixels;
//   BM_JpegDecodeStb     stb_image's JPEG decoder, which agla used before (pixels a few levels off);
//   BM_JpegDecodeRatio   both decoders alternated for --rounds=N rounds (default 200), printing
//                        agla / stb for wall and process CPU time, and how far stb's pixels are.
// Decoding is single-threaded; `--threads N` sets the intra-op threads (default 1).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <tuple>
#include <vector>

#include "agla/io/image.hpp"
#include "support/harness.hpp"
#include "support/stb_jpeg.hpp"

namespace {

int rounds = 200;

const std::vector<uint8_t>& jpeg() {
  static const std::vector<uint8_t> bytes = [] {
    const std::string path = std::string(AGLA_SOURCE_DIR) + "/tests/data/image_jpeg/bench_640x480.jpg";
    std::ifstream in(path, std::ios::binary);
    if (!in.good()) {
      std::fprintf(stderr, "image_bench: cannot open %s\n", path.c_str());
      std::exit(1);
    }
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  return bytes;
}

at::Tensor decode_agla() { return agla::io::decode_image(jpeg().data(), jpeg().size(), "bench_640x480.jpg"); }

std::vector<uint8_t> decode_stb() {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels = agla::bench::stb_decode_jpeg(jpeg().data(), jpeg().size(), &width, &height);
  if (width != 640 || height != 480) {
    std::fprintf(stderr, "image_bench: stb failed on bench_640x480.jpg\n");
    std::exit(1);
  }
  return pixels;
}

void BM_JpegDecodeAgla(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(decode_agla().data_ptr());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(jpeg().size()));
}
BENCHMARK(BM_JpegDecodeAgla)->Unit(benchmark::kMillisecond);

void BM_JpegDecodeStb(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(decode_stb().data());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(jpeg().size()));
}
BENCHMARK(BM_JpegDecodeStb)->Unit(benchmark::kMillisecond);

// Alternating the two decoders round by round exposes both to the same machine load.
void BM_JpegDecodeRatio(benchmark::State& state) {
  using Clocks = agla::bench::Clocks;
  for (auto _ : state) {
    Clocks agla_time, stb_time;
    decode_agla();
    decode_stb();  // warm-up
    for (int i = 0; i < rounds; ++i) {
      const Clocks a = Clocks::now();
      benchmark::DoNotOptimize(decode_agla().data_ptr());
      const Clocks b = Clocks::now();
      benchmark::DoNotOptimize(decode_stb().data());
      const Clocks c = Clocks::now();
      agla_time.wall += (b - a).wall;
      agla_time.cpu += (b - a).cpu;
      stb_time.wall += (c - b).wall;
      stb_time.cpu += (c - b).cpu;
    }
    const std::vector<uint8_t> stb = decode_stb();
    const at::Tensor ours = decode_agla().to(at::kInt);
    const at::Tensor theirs = at::from_blob(const_cast<uint8_t*>(stb.data()), {480, 640, 3}, at::kByte).to(at::kInt);
    const at::Tensor diff = (ours - theirs).abs();
    state.counters["agla_over_stb_wall"] = agla_time.wall / stb_time.wall;
    state.counters["agla_over_stb_cpu"] = agla_time.cpu / stb_time.cpu;
    for (const auto& [what, ours_s, stb_s] :
         {std::tuple<const char*, double, double>{"wall", agla_time.wall, stb_time.wall},
          {"process CPU", agla_time.cpu, stb_time.cpu}}) {
      std::fprintf(stderr,
                   "image_bench (%s, %d rounds): 640x480 JPEG decode: agla (libjpeg-turbo) %.3f ms, stb %.3f ms; "
                   "agla / stb = %.2f\n",
                   what, rounds, 1e3 * ours_s / rounds, 1e3 * stb_s / rounds, ours_s / stb_s);
    }
    std::fprintf(stderr,
                 "image_bench: stb's pixels vs Pillow's (= agla's): max abs diff %d, %.1f %% of values differ\n",
                 diff.max().item<int>(), 100.0 * diff.ne(0).sum().item<double>() / static_cast<double>(diff.numel()));
  }
}
BENCHMARK(BM_JpegDecodeRatio)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  return agla::bench::run_benchmarks(argc, argv, 1, nullptr, [](const char* arg) {
    if (std::strncmp(arg, "--rounds=", 9) != 0) return false;
    rounds = std::max(1, std::atoi(arg + 9));
    return true;
  });
}
