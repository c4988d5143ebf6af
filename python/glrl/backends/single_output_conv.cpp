// A convolution with one output channel (stride 1, dilation 1, one group), NHWC float32 (see winograd.py for
// when it is used).
//
// SRCNN's last layer (5x5, 32 -> 1) took over half of SRCNN's CPU inference time in oneDNN, which has no
// fast path for a single output channel. Here each output pixel is, per kernel row, one dot product of
// kernel_w * C contiguous floats: the kernel row's inputs in an NHWC map lie side by side, and so do the
// weights once stored as KH x KW x C. Zero padding is handled by shortening the dot product at the borders.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace {

inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

// x: N x H x W x C (contiguous), weight: KH x KW x C (contiguous), bias: 1 value or empty; returns
// N x OH x OW with OH = H + 2 pad_h - KH + 1 (likewise OW).
torch::Tensor single_output_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 int64_t pad_h, int64_t pad_w) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "x: NHWC float32 on the CPU");
  TORCH_CHECK(weight.dim() == 3 && weight.is_contiguous() && weight.size(2) == x.size(3) &&
              weight.scalar_type() == torch::kFloat32 && weight.device().is_cpu(), "weight: KH x KW x C float32 on the CPU");
  TORCH_CHECK(bias.numel() <= 1 && bias.device().is_cpu(), "bias: one value on the CPU, or empty");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "padding must not be negative");
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t kernel_h = weight.size(0), kernel_w = weight.size(1);
  const int64_t out_h = height + 2 * pad_h - kernel_h + 1, out_w = width + 2 * pad_w - kernel_w + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "the input is smaller than the kernel");
  const float offset = bias.numel() ? bias.item<float>() : 0.f;
  auto out = torch::empty({batch, out_h, out_w}, x.options());
  const float* in = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  float* result = out.data_ptr<float>();
  at::parallel_for(0, batch * out_h, 1, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t n = row / out_h, oy = row % out_h;
      float* out_row = result + row * out_w;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        const int64_t ix = ox - pad_w;  // the input column under kernel column 0
        const int64_t kx_first = std::max<int64_t>(0, -ix), kx_last = std::min(kernel_w, width - ix);
        float sum = offset;
        for (int64_t ky = 0; ky < kernel_h; ++ky) {
          const int64_t iy = oy + ky - pad_h;
          if (iy < 0 || iy >= height || kx_first >= kx_last) continue;
          sum += dot(in + ((n * height + iy) * width + ix + kx_first) * channels,
                     w + (ky * kernel_w + kx_first) * channels, (kx_last - kx_first) * channels);
        }
        out_row[ox] = sum;
      }
    }
  });
  return out;
}
