// Winograd F(4x4, 3x3) convolution and its weight gradient on the CPU (see winograd.py for why and when they
// are used).
//
// Caffe's Convolution with a 3x3 kernel, stride 1, dilation 1, one group, any zero padding: y = w (*) x + b,
// on channels-last (NHWC) float tensors. Each 4x4 output tile comes from a 6x6 input tile:
//     Y = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A        (Lavin & Gray, 2016)
// so the 36 positions of a tile each need one C x K matrix product: 36 products instead of the direct
// convolution's 144 multiply-adds per input and output channel. Tiles are processed in blocks that stay in
// the core's cache: gather and transform a block's input tiles, 36 matrix products (oneDNN/MKL through
// ATen's brgemm), inverse-transform and add the bias straight into the output.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "partial_sums.h"

namespace {

constexpr int64_t kTile = 4;   // output tile side
constexpr int64_t kInput = 6;  // input tile side: kTile + 3 - 1
constexpr int64_t kPositions = kInput * kInput;
constexpr int64_t kGroup = 16;   // tiles transposed together by the weight gradient (a cache line of floats)

// B^T applied to six vectors d0..d5 of `n` floats; output row i goes to out + i * stride.
inline void input_transform(const float* const d[kInput], float* out, int64_t stride, int64_t n) {
  float* o0 = out;
  float* o1 = out + stride;
  float* o2 = out + 2 * stride;
  float* o3 = out + 3 * stride;
  float* o4 = out + 4 * stride;
  float* o5 = out + 5 * stride;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const float a = d[0][c], b = d[1][c], e = d[2][c], f = d[3][c], g = d[4][c], h = d[5][c];
    o0[c] = 4.f * a - 5.f * e + g;
    o1[c] = g + f - 4.f * (b + e);
    o2[c] = g - f + 4.f * (b - e);
    o3[c] = g - e + 2.f * (f - b);
    o4[c] = g - e + 2.f * (b - f);
    o5[c] = 4.f * b - 5.f * f + h;
  }
}

// A^T applied to six vectors m0..m5 (m_i at m + i * stride) of `n` floats, plus `bias` (may be null);
// output row j goes to out[j].
inline void output_transform(const float* m, int64_t stride, const float* bias, float* const out[kTile],
                             int64_t n) {
  const float* m0 = m;
  const float* m1 = m + stride;
  const float* m2 = m + 2 * stride;
  const float* m3 = m + 3 * stride;
  const float* m4 = m + 4 * stride;
  const float* m5 = m + 5 * stride;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const float b0 = bias ? bias[c] : 0.f;
    const float s12 = m1[c] + m2[c], d12 = m1[c] - m2[c], s34 = m3[c] + m4[c], d34 = m3[c] - m4[c];
    out[0][c] = m0[c] + s12 + s34 + b0;
    out[1][c] = d12 + 2.f * d34 + b0;
    out[2][c] = s12 + 4.f * s34 + b0;
    out[3][c] = d12 + 8.f * d34 + m5[c] + b0;
  }
}


// V = B^T d B for the 6x6 input tile whose top-left corner is (y0, x0) of image n (zeros outside the image):
// position i * 6 + j goes to v + (i * 6 + j) * stride. `rows` holds 36 x C floats of scratch, `zeros` C zeros.
inline void transform_input_tile(const float* x, int64_t height, int64_t width, int64_t channels, int64_t n,
                                 int64_t y0, int64_t x0, float* rows, const float* zeros, float* v, int64_t stride) {
  // columns first: rows[i][j] = (B^T d)[i][j] for input column j
  for (int64_t j = 0; j < kInput; ++j) {
    const float* column[kInput];
    for (int64_t i = 0; i < kInput; ++i) {
      const int64_t iy = y0 + i, ix = x0 + j;
      column[i] = (iy >= 0 && iy < height && ix >= 0 && ix < width)
                      ? x + ((n * height + iy) * width + ix) * channels : zeros;
    }
    input_transform(column, rows + j * channels, kInput * channels, channels);
  }
  // then rows: v[i * 6 + j] = (B^T d B)[i][j]
  for (int64_t i = 0; i < kInput; ++i) {
    const float* row[kInput];
    for (int64_t j = 0; j < kInput; ++j) row[j] = rows + (i * kInput + j) * channels;
    input_transform(row, v + i * kInput * stride, stride, channels);
  }
}


// A applied to four vectors e0..e3 of `n` floats (the transpose of output_transform's A^T, for gradients);
// output row i goes to out + i * stride.
inline void gradient_transform(const float* const e[kTile], float* out, int64_t stride, int64_t n) {
  float* o0 = out;
  float* o1 = out + stride;
  float* o2 = out + 2 * stride;
  float* o3 = out + 3 * stride;
  float* o4 = out + 4 * stride;
  float* o5 = out + 5 * stride;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const float a = e[0][c], b = e[1][c], f = e[2][c], g = e[3][c];
    const float s02 = a + f, s13 = b + g, q02 = a + 4.f * f, q13 = 2.f * b + 8.f * g;
    o0[c] = a;
    o1[c] = s02 + s13;
    o2[c] = s02 - s13;
    o3[c] = q02 + q13;
    o4[c] = q02 - q13;
    o5[c] = g;
  }
}

// U = A e A^T for the 4x4 tile of output gradients whose top-left corner is (y0, x0) of image n (zeros past
// the edge): position i * 6 + j goes to u + (i * 6 + j) * stride. `rows` holds 24 x K floats of scratch.
inline void transform_gradient_tile(const float* dy, int64_t height, int64_t width, int64_t outputs, int64_t n,
                                    int64_t y0, int64_t x0, float* rows, const float* zeros, float* u,
                                    int64_t stride) {
  // columns first: rows[i][j] = (A e)[i][j] for gradient column j
  for (int64_t j = 0; j < kTile; ++j) {
    const float* column[kTile];
    for (int64_t i = 0; i < kTile; ++i) {
      const int64_t iy = y0 + i, ix = x0 + j;
      column[i] = (iy < height && ix < width) ? dy + ((n * height + iy) * width + ix) * outputs : zeros;
    }
    gradient_transform(column, rows + j * outputs, kTile * outputs, outputs);
  }
  // then rows: u[i * 6 + j] = (A e A^T)[i][j]
  for (int64_t i = 0; i < kInput; ++i) {
    const float* row[kTile];
    for (int64_t j = 0; j < kTile; ++j) row[j] = rows + (i * kTile + j) * outputs;
    gradient_transform(row, u + i * kInput * stride, stride, outputs);
  }
}

}  // namespace

// x: N x H x W x C (contiguous, float32); u: 36 x C x K, the transformed weights (G g G^T per tile position);
// bias: K values or an empty tensor; pad: zero padding on every side. Returns N x Ho x Wo x K.
torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& u, const torch::Tensor& bias, int64_t pad) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "input must be a contiguous N x H x W x C float32 CPU tensor");
  TORCH_CHECK(u.dim() == 3 && u.size(0) == kPositions && u.size(1) == x.size(3) && u.is_contiguous() &&
              u.scalar_type() == torch::kFloat, "weights must be 36 x C x K float32, C matching the input");
  TORCH_CHECK(pad >= 0, "padding must not be negative");
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3), outputs = u.size(2);
  TORCH_CHECK(bias.numel() == 0 || (bias.numel() == outputs && bias.is_contiguous() &&
                                    bias.scalar_type() == torch::kFloat), "bias must be K float32 values");
  const int64_t out_h = height + 2 * pad - 2, out_w = width + 2 * pad - 2;
  TORCH_CHECK(out_h > 0 && out_w > 0, "the input is smaller than the 3x3 kernel");
  const int64_t tiles_h = (out_h + kTile - 1) / kTile, tiles_w = (out_w + kTile - 1) / kTile;
  const int64_t tiles = batch * tiles_h * tiles_w;
  // Blocks of up to 64 tiles (V and M then take 2 x 36 x 64 x 64 floats: 1.2 MB at 64 channels), at least
  // four per thread so that the threads share the work evenly.
  const int64_t threads = at::get_num_threads();
  const int64_t block = std::max<int64_t>(8, std::min<int64_t>(64, (tiles + 4 * threads - 1) / (4 * threads)));
  const int64_t blocks = (tiles + block - 1) / block;

  auto y = torch::empty({batch, out_h, out_w, outputs}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();

  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    std::vector<float> v(kPositions * block * channels), m(kPositions * block * outputs);
    std::vector<float> rows(kPositions * channels), cols(kInput * kTile * outputs);
    std::vector<float> zeros(channels, 0.f), discard(kTile * outputs);
    for (int64_t b = first; b < last; ++b) {
      const int64_t t0 = b * block, count = std::min(block, tiles - t0);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t id = t0 + t, n = id / (tiles_h * tiles_w), ty = id / tiles_w % tiles_h, tx = id % tiles_w;
        transform_input_tile(xp, height, width, channels, n, ty * kTile - pad, tx * kTile - pad, rows.data(),
                             zeros.data(), v.data() + t * channels, block * channels);
      }
      for (int64_t p = 0; p < kPositions; ++p) {
        at::native::cpublas::brgemm(count, outputs, channels, channels, outputs, outputs, false,
                                    v.data() + p * block * channels, up + p * channels * outputs,
                                    m.data() + p * block * outputs);
      }
      for (int64_t t = 0; t < count; ++t) {
        const int64_t id = t0 + t, n = id / (tiles_h * tiles_w), ty = id / tiles_w % tiles_h, tx = id % tiles_w;
        // over each row i of the tile: cols[i][c] = (M A)[i][c] for output column c
        for (int64_t i = 0; i < kInput; ++i) {
          float* out[kTile];
          for (int64_t c = 0; c < kTile; ++c) out[c] = cols.data() + (i * kTile + c) * outputs;
          output_transform(m.data() + (i * kInput * block + t) * outputs, block * outputs, nullptr, out, outputs);
        }
        // then down each output column c: Y[r][c] = (A^T M A)[r][c] + bias, clipped at the output's edge
        for (int64_t c = 0; c < kTile; ++c) {
          const int64_t ox = tx * kTile + c;
          if (ox >= out_w) break;
          float* out[kTile];
          for (int64_t r = 0; r < kTile; ++r) {
            const int64_t oy = ty * kTile + r;
            out[r] = oy < out_h ? yp + ((n * out_h + oy) * out_w + ox) * outputs : discard.data() + r * outputs;
          }
          output_transform(cols.data() + c * outputs, kTile * outputs, bp, out, outputs);
        }
      }
    }
  });
  return y;
}

// The weight gradient of conv3x3 in the Winograd domain: x is the N x H x W x C input, dy the N x Ho x Wo x K
// gradient of its output (both contiguous float32), pad the forward padding. Returns M (36 x C x K) with
//     M = sum over tiles of (B^T d B)_c .* (A dy A^T)_k,        dW_kc = G^T M_ck G
// (the transpose of the forward's algorithm): per 4x4 gradient tile and its 6x6 input tile, 36 rank-one
// updates of C x K, done as one matrix product per position over a block of tiles. The caller applies G^T . G.
torch::Tensor conv3x3_weight_grad(const torch::Tensor& x, const torch::Tensor& dy, int64_t pad) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "input must be a contiguous N x H x W x C float32 CPU tensor");
  TORCH_CHECK(pad >= 0, "padding must not be negative");
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t out_h = height + 2 * pad - 2, out_w = width + 2 * pad - 2;
  TORCH_CHECK(dy.dim() == 4 && dy.scalar_type() == torch::kFloat && dy.is_contiguous() && dy.size(0) == batch &&
              dy.size(1) == out_h && dy.size(2) == out_w, "the gradient must be a contiguous N x Ho x Wo x K "
              "float32 tensor matching the input and padding");
  TORCH_CHECK(out_h > 0 && out_w > 0, "the input is smaller than the 3x3 kernel");
  const int64_t outputs = dy.size(3);
  const int64_t tiles_h = (out_h + kTile - 1) / kTile, tiles_w = (out_w + kTile - 1) / kTile;
  const int64_t tiles = batch * tiles_h * tiles_w;
  const int64_t threads = at::get_num_threads();
  // Blocks of up to 64 tiles: V^T and U then take 2 x 36 x 64 x 64 floats (1.2 MB at 64 channels). On Zen 5
  // a GLRL layer's gradient (32 x 64 x 31 x 31) took 3.5 ms at 64, 4.0 at 32, 5.6 at 128, 7.2 at 256 tiles.
  const int64_t block = std::max<int64_t>(8, std::min<int64_t>(64, (tiles + 4 * threads - 1) / (4 * threads)));
  const int64_t blocks = (tiles + block - 1) / block;
  const int64_t size = kPositions * channels * outputs;
  // one accumulator per range of blocks (M is 36 x 64 x 64 floats, 0.6 MB, at 64 channels)
  PartialSums<float> partial;
  const float* xp = x.data_ptr<float>();
  const float* dp = dy.data_ptr<float>();

  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    std::vector<float> sums(size, 0.f);
    float* m = sums.data();
    // per position q: vt[q] = V_q^T (C x block, brgemm's row-major A) and u[q] = U_q (block x K). Input
    // tiles are transformed kGroup at a time into `group` and transposed from there a cache line at a time.
    std::vector<float> vt(kPositions * channels * block), u(kPositions * block * outputs);
    std::vector<float> group(kGroup * kPositions * channels), rows(kPositions * std::max(channels, outputs));
    std::vector<float> zeros(std::max(channels, outputs), 0.f);
    for (int64_t b = first; b < last; ++b) {
      const int64_t t0 = b * block, count = std::min(block, tiles - t0);
      for (int64_t g0 = 0; g0 < count; g0 += kGroup) {
        const int64_t members = std::min(kGroup, count - g0);
        for (int64_t t = g0; t < g0 + members; ++t) {
          const int64_t id = t0 + t, n = id / (tiles_h * tiles_w), ty = id / tiles_w % tiles_h, tx = id % tiles_w;
          transform_input_tile(xp, height, width, channels, n, ty * kTile - pad, tx * kTile - pad, rows.data(),
                               zeros.data(), group.data() + (t - g0) * kPositions * channels, channels);
          transform_gradient_tile(dp, out_h, out_w, outputs, n, ty * kTile, tx * kTile, rows.data(), zeros.data(),
                                  u.data() + t * outputs, block * outputs);
        }
        for (int64_t q = 0; q < kPositions; ++q) {
          for (int64_t c = 0; c < channels; ++c) {
            float* to = vt.data() + (q * channels + c) * block + g0;
            const float* from = group.data() + q * channels + c;
            for (int64_t t = 0; t < members; ++t) to[t] = from[t * kPositions * channels];
          }
        }
      }
      for (int64_t q = 0; q < kPositions; ++q) {
        at::native::cpublas::brgemm(channels, outputs, count, block, outputs, outputs, true,
                                    vt.data() + q * channels * block, u.data() + q * block * outputs,
                                    m + q * channels * outputs);
      }
    }
    partial.add(first, std::move(sums));
  });
  auto result = torch::zeros({kPositions, channels, outputs}, x.options());
  partial.sum_into(result.data_ptr<float>());
  return result;
}

// prelu_backward.cpp, built into the same module
std::vector<torch::Tensor> prelu_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                          const torch::Tensor& slope);
// single_output_conv.cpp, likewise
torch::Tensor single_output_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 int64_t pad_h, int64_t pad_w);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("conv3x3", &conv3x3, "Winograd F(4x4, 3x3) convolution, NHWC float32, stride 1");
  module.def("conv3x3_weight_grad", &conv3x3_weight_grad,
             "its weight gradient in the Winograd domain (36 x C x K), NHWC float32");
  module.def("prelu_backward", &prelu_backward, "Caffe's PReLU backward in one pass, float32");
  module.def("single_output_conv", &single_output_conv,
             "a convolution with one output channel, NHWC float32, stride 1");
}
