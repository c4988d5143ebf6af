// Winograd F(4x4, 3x3) convolution for CPU inference (see winograd.py for why and when it is used).
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

namespace {

constexpr int64_t kTile = 4;   // output tile side
constexpr int64_t kInput = 6;  // input tile side: kTile + 3 - 1
constexpr int64_t kPositions = kInput * kInput;

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
        const int64_t y0 = ty * kTile - pad, x0 = tx * kTile - pad;
        // columns first: rows[i][j] = (B^T d)[i][j] for input column j
        for (int64_t j = 0; j < kInput; ++j) {
          const float* column[kInput];
          for (int64_t i = 0; i < kInput; ++i) {
            const int64_t iy = y0 + i, ix = x0 + j;
            column[i] = (iy >= 0 && iy < height && ix >= 0 && ix < width)
                            ? xp + ((n * height + iy) * width + ix) * channels : zeros.data();
          }
          input_transform(column, rows.data() + j * channels, kInput * channels, channels);
        }
        // then rows: v[i * 6 + j][t] = (B^T d B)[i][j]
        for (int64_t i = 0; i < kInput; ++i) {
          const float* row[kInput];
          for (int64_t j = 0; j < kInput; ++j) row[j] = rows.data() + (i * kInput + j) * channels;
          input_transform(row, v.data() + (i * kInput * block + t) * channels, block * channels, channels);
        }
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("conv3x3", &conv3x3, "Winograd F(4x4, 3x3) convolution, NHWC float32, stride 1");
}
