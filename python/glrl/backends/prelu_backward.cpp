// PReLU's backward pass in one read of x and the top gradient (see winograd.py for when it is used).
//
// Caffe's PReLULayer::Backward_cpu: the bottom gradient is g where x > 0 and slope * g where x <= 0; the slope
// gradient is the sum of g * x over x <= 0, per channel (or over everything for a shared slope). PyTorch's
// elementwise version needs five passes over memory (mask, difference, multiply-add, product, sum); this one
// reads x and g once and writes the bottom gradient once. Sums run in float over a plane or 64 rows and in
// double across them, per range of the parallel loop, then across ranges.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "partial_sums.h"

namespace {

// Selects by bit mask rather than by `?:`: GCC turns a float `?:` in these loops into a branch, which the
// signs of real activations make unpredictable (a scalar loop at ~18 cycles per element on a Zen 3); integer
// masks vectorise on every x86 level. The values are picked exactly, so results are unchanged.
inline uint32_t negative_mask(float v) { return v <= 0.f ? ~0u : 0u; }
inline float select(uint32_t mask, float if_set, float otherwise) {
  return std::bit_cast<float>((std::bit_cast<uint32_t>(if_set) & mask) |
                              (std::bit_cast<uint32_t>(otherwise) & ~mask));
}

constexpr int64_t kSharedChunk = 4096;  // elements per unit of work when one slope covers the whole tensor

// One contiguous run of `n` elements that all use slope s: writes the bottom gradient, returns the slope's
// partial sum.
inline float prelu_run(const float* __restrict g, const float* __restrict x, float* __restrict out, int64_t n,
                       float s) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t negative = negative_mask(x[i]);
    out[i] = g[i] * select(negative, s, 1.f);
    sum += g[i] * select(negative, x[i], 0.f);
  }
  return sum;
}

// One channels-last row of C elements, channel c using slope[c]: writes the bottom gradient, adds the slopes'
// partial sums to sum[0..C).
inline void channel_row(const float* __restrict g, const float* __restrict x, float* __restrict out,
                        const float* __restrict slope, float* __restrict sum, int64_t channels) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const uint32_t negative = negative_mask(x[c]);
    out[c] = g[c] * select(negative, slope[c], 1.f);
    sum[c] += g[c] * select(negative, x[c], 0.f);
  }
}

}  // namespace

// grad, x: the same shape and strides (contiguous, or 4-D channels-last), float32 CPU; slope: C values for
// channel-wise PReLU (channel = dimension 1) or one shared value. Returns {bottom gradient, slope gradient}.
std::vector<torch::Tensor> prelu_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                          const torch::Tensor& slope) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && grad.scalar_type() == torch::kFloat &&
              slope.scalar_type() == torch::kFloat && slope.is_contiguous(), "PReLU backward wants float32 CPU tensors");
  TORCH_CHECK(x.dim() >= 2 && grad.sizes() == x.sizes() && grad.strides() == x.strides(),
              "the gradient must have the input's shape and strides");
  const bool channels_last = !x.is_contiguous() && x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || channels_last, "the input must be contiguous or channels-last");
  const int64_t channels = x.size(1), numel = x.numel();
  const bool shared = slope.numel() == 1;
  TORCH_CHECK(shared || slope.numel() == channels, "the slope must have one value per channel or one in all");

  auto grad_x = torch::empty_like(x);
  const float* gp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* sp = slope.data_ptr<float>();
  float* op = grad_x.data_ptr<float>();
  const int64_t sums = shared ? 1 : channels;
  PartialSums<double> partial;

  if (shared || !channels_last) {
    // runs of one slope: chunks of the flat tensor (shared), or the N x C planes of an NCHW tensor
    const int64_t length = shared ? kSharedChunk : numel / std::max<int64_t>(1, x.size(0) * channels);
    const int64_t units = length ? (numel + length - 1) / length : 0;
    at::parallel_for(0, units, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, length)),
                     [&](int64_t first, int64_t last) {
      std::vector<double> acc(sums, 0.0);
      for (int64_t u = first; u < last; ++u) {
        const int64_t c = shared ? 0 : u % channels, start = u * length, n = std::min(length, numel - start);
        acc[c] += prelu_run(gp + start, xp + start, op + start, n, sp[c]);
      }
      partial.add(first, std::move(acc));
    });
  } else {
    // channels-last: rows of C channels, one slope per element of a row
    const int64_t rows = numel / channels;
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / channels), [&](int64_t first, int64_t last) {
      std::vector<double> acc(sums, 0.0);
      std::vector<float> sum(channels);
      // float sums over at most 64 rows at a time, then into the range's double accumulators
      for (int64_t r0 = first; r0 < last; r0 += 64) {
        std::fill(sum.begin(), sum.end(), 0.f);
        for (int64_t r = r0; r < std::min(last, r0 + 64); ++r) {
          channel_row(gp + r * channels, xp + r * channels, op + r * channels, sp, sum.data(), channels);
        }
        for (int64_t c = 0; c < channels; ++c) acc[c] += sum[c];
      }
      partial.add(first, std::move(acc));
    });
  }
  std::vector<double> totals(sums, 0.0);
  partial.sum_into(totals.data());
  auto grad_slope = torch::empty_like(slope);
  float* gs = grad_slope.data_ptr<float>();
  for (int64_t c = 0; c < sums; ++c) gs[c] = static_cast<float>(totals[c]);
  return {grad_x, grad_slope};
}
