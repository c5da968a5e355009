// Bit-packed binary convolution for detkd's binary layers: XNOR + popcount on the CPU.
//
// Layout. Signs are bits: 1 for >= 0 (+1), 0 for < 0 (-1). Channels are packed 64 per uint64 word,
// channel c at bit c % 64 of word c / 64; unused bits of the last word are 0 in inputs and weights,
// so they never count as a mismatch.
//   pack_input : float [B, C, H, W]       -> int64 [B, H, W, words] (+ optional mean_c |x|)
//   pack_weight: float [O, C, kh, kw]     -> int64 [kh * kw * words, O]   (filters innermost)
//   xnor_conv2d: packed input and weights -> float [B, O, Ho, Wo] =
//                (sum over valid taps of sign(x) . sign(w)) * scale[b, ho, wo] * alpha[o] + bias[o],
//                where per tap sign(x) . sign(w) = C - 2 * popcount(x XOR w); scale may be empty (1).
// Zero padding: a tap outside the image contributes 0, as in the float conv of sign(x) with zero
// padding. Each input word is XORed with the same word of all O filters at once (contiguous in the
// packed weight), 8 filters per AVX-512 VPOPCNTQ instruction where the CPU has it (-march=native).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

inline int64_t words_for(int64_t channels) { return (channels + 63) / 64; }

// Returns the packed signs and, when abs_mean is set, mean over channels of |x| as float [B, 1, H, W]
// (XNOR-Net's A, computed in the same pass; otherwise an empty tensor).
std::vector<torch::Tensor> pack_input(const torch::Tensor& input, bool abs_mean) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat, "pack_input: expected float [B, C, H, W]");
  auto x = input.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), words = words_for(C);
  auto out = torch::zeros({B, H, W, words}, torch::kInt64);
  auto mean = abs_mean ? torch::zeros({B, 1, H, W}, torch::kFloat) : torch::empty({0}, torch::kFloat);
  const float* px = x.data_ptr<float>();
  auto* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  float* pm = abs_mean ? mean.data_ptr<float>() : nullptr;
  const float inv_c = 1.f / static_cast<float>(C);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> row(W);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, y = bh % H;
      uint64_t* dst = po + bh * W * words;
      float* m = abs_mean ? pm + bh * W : nullptr;
      for (int64_t word = 0; word < words; ++word) {
        std::fill(row.begin(), row.end(), 0);
        for (int64_t c = word * 64; c < std::min(C, word * 64 + 64); ++c) {
          const float* src = px + ((b * C + c) * H + y) * W;
          const int shift = static_cast<int>(c & 63);
          for (int64_t i = 0; i < W; ++i) row[i] |= static_cast<uint64_t>(src[i] >= 0.f) << shift;  // branchless
          if (m)
            for (int64_t i = 0; i < W; ++i) m[i] += std::abs(src[i]);
        }
        for (int64_t i = 0; i < W; ++i) dst[i * words + word] = row[i];
      }
      if (m)
        for (int64_t i = 0; i < W; ++i) m[i] *= inv_c;
    }
  });
  return {out, mean};
}

torch::Tensor pack_weight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kFloat, "pack_weight: expected float [O, C, kh, kw]");
  auto w = weight.contiguous();
  const int64_t O = w.size(0), C = w.size(1), KH = w.size(2), KW = w.size(3), words = words_for(C);
  auto out = torch::zeros({KH * KW * words, O}, torch::kInt64);
  const float* pw = w.data_ptr<float>();
  auto* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < KH * KW; ++t)
        if (pw[(o * C + c) * KH * KW + t] >= 0.f) po[(t * words + (c >> 6)) * O + o] |= uint64_t{1} << (c & 63);
  return out;
}

// out[o] = sum_j popcount(x[j] ^ w[j][o]) over a window's valid words j, for all filters o. The
// accumulators stay in registers: with AVX-512 VPOPCNTQ, 8 filters per instruction; otherwise the
// compiler vectorises the plain loop as it can.
inline void window_mismatches(int64_t* __restrict out, const uint64_t* xs, const uint64_t* const* ws, int64_t n, int64_t O) {
  int64_t o = 0;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
  for (; o + 32 <= O; o += 32) {  // 4 registers of 8 filters: each x word is broadcast once for 32 filters
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < n; ++j) {
      const __m512i x = _mm512_set1_epi64(static_cast<long long>(xs[j]));
      const uint64_t* w = ws[j] + o;
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(w))));
      a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(w + 8))));
      a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(w + 16))));
      a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(w + 24))));
    }
    _mm512_storeu_si512(out + o, a0);
    _mm512_storeu_si512(out + o + 8, a1);
    _mm512_storeu_si512(out + o + 16, a2);
    _mm512_storeu_si512(out + o + 24, a3);
  }
  for (; o + 8 <= O; o += 8) {
    __m512i a = _mm512_setzero_si512();
    for (int64_t j = 0; j < n; ++j)
      a = _mm512_add_epi64(a, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64(static_cast<long long>(xs[j])), _mm512_loadu_si512(ws[j] + o))));
    _mm512_storeu_si512(out + o, a);
  }
#endif
  for (; o < O; ++o) {
    int64_t count = 0;
    for (int64_t j = 0; j < n; ++j) count += __builtin_popcountll(xs[j] ^ ws[j][o]);
    out[o] = count;
  }
}

torch::Tensor xnor_conv2d(const torch::Tensor& xpacked, const torch::Tensor& wpacked, int64_t channels,
                          int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                          int64_t dil_h, int64_t dil_w, const torch::Tensor& scale, const torch::Tensor& alpha,
                          const torch::Tensor& bias) {
  TORCH_CHECK(xpacked.dim() == 4 && xpacked.scalar_type() == torch::kInt64, "xnor_conv2d: packed input must be int64 [B, H, W, words]");
  TORCH_CHECK(wpacked.dim() == 2 && wpacked.scalar_type() == torch::kInt64, "xnor_conv2d: packed weight must be int64 [taps * words, O]");
  const int64_t B = xpacked.size(0), H = xpacked.size(1), W = xpacked.size(2), words = xpacked.size(3);
  const int64_t O = wpacked.size(1), taps = kh * kw;
  TORCH_CHECK(words == words_for(channels), "xnor_conv2d: input has ", words, " words per pixel, ", channels, " channels need ", words_for(channels));
  TORCH_CHECK(wpacked.size(0) == taps * words, "xnor_conv2d: weight has ", wpacked.size(0), " words per filter, expected ", taps * words);
  const int64_t Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) / stride_h + 1;
  const int64_t Wo = (W + 2 * pad_w - dil_w * (kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "xnor_conv2d: empty output");
  const bool scaled = scale.numel() > 0;
  TORCH_CHECK(!scaled || (scale.scalar_type() == torch::kFloat && scale.numel() == B * Ho * Wo), "xnor_conv2d: scale must be float [B, 1, Ho, Wo]");
  TORCH_CHECK(alpha.scalar_type() == torch::kFloat && alpha.numel() == O && bias.scalar_type() == torch::kFloat && bias.numel() == O,
              "xnor_conv2d: alpha and bias must be float [O]");
  auto xp = xpacked.contiguous();
  auto wp = wpacked.contiguous();
  auto sc = scaled ? scale.contiguous() : scale;
  auto al = alpha.contiguous();
  auto bi = bias.contiguous();
  const auto* px = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  const auto* pw = reinterpret_cast<const uint64_t*>(wp.data_ptr<int64_t>());
  const float* ps = scaled ? sc.data_ptr<float>() : nullptr;
  const float* pa = al.data_ptr<float>();
  const float* pb = bi.data_ptr<float>();
  auto out = torch::empty({B, O, Ho, Wo}, torch::kFloat);
  float* pout = out.data_ptr<float>();
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> acc(Wo * O);
    std::vector<int64_t> valid(Wo);
    std::vector<uint64_t> xs(taps * words);
    std::vector<const uint64_t*> ws(taps * words);
    for (int64_t by = begin; by < end; ++by) {
      const int64_t b = by / Ho, oy = by % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        int64_t n = 0, valid_taps = 0;  // gather the window's words; taps in the zero padding add nothing
        for (int64_t ty = 0; ty < kh; ++ty) {
          const int64_t iy = oy * stride_h - pad_h + ty * dil_h;
          if (iy < 0 || iy >= H) continue;
          for (int64_t tx = 0; tx < kw; ++tx) {
            const int64_t ix = ox * stride_w - pad_w + tx * dil_w;
            if (ix < 0 || ix >= W) continue;
            const uint64_t* xw = px + ((b * H + iy) * W + ix) * words;
            const uint64_t* ww = pw + (ty * kw + tx) * words * O;
            for (int64_t k = 0; k < words; ++k, ++n) {
              xs[n] = xw[k];
              ws[n] = ww + k * O;
            }
            ++valid_taps;
          }
        }
        window_mismatches(acc.data() + ox * O, xs.data(), ws.data(), n, O);
        valid[ox] = valid_taps * channels;
      }
      // epilogue: dot = valid * C - 2 * mismatches, times K (per pixel) and alpha (per filter), plus bias
      const float* srow = scaled ? ps + (b * Ho + oy) * Wo : nullptr;
      for (int64_t o = 0; o < O; ++o) {
        float* dst = pout + ((b * O + o) * Ho + oy) * Wo;
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const float dot = static_cast<float>(valid[ox] - 2 * acc[ox * O + o]);
          dst[ox] = dot * (scaled ? srow[ox] : 1.f) * pa[o] + pb[o];
        }
      }
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_input", &pack_input, "sign bits of float [B, C, H, W] -> (int64 [B, H, W, words], mean_c |x| float [B, 1, H, W] or empty)");
  m.def("pack_weight", &pack_weight, "sign bits of float [O, C, kh, kw] -> int64 [kh * kw * words, O]");
  m.def("xnor_conv2d", &xnor_conv2d, "binary conv by XNOR + popcount, scaled -> float [B, O, Ho, Wo]");
}
