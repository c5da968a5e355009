// Bit-packed binary convolution for detkd's binary layers: XNOR + popcount on the CPU.
//
// Layout. Signs are bits: 1 for >= 0 (+1), 0 for < 0 (-1). Channels are packed 64 per uint64 word,
// channel c at bit c % 64 of word c / 64; unused bits of the last word are 0 in inputs and weights,
// so they never count as a mismatch.
//   pack_input : float [B, C, H, W]       -> int64 [B, H, W, words]
//   pack_weight: float [O, C, kh, kw]     -> int64 [O, kh * kw * words]   (tap-major, then words)
//   xnor_conv2d: packed input and weights -> float [B, O, Ho, Wo], the sum over valid taps of
//                sign(x) . sign(w) = C - 2 * popcount(x XOR w) per tap.
// Zero padding: a tap outside the image contributes 0, as in the float conv of sign(x) with zero
// padding. The window is gathered with zero words there; those taps add popcount(w_tap) mismatches,
// which are subtracted again from a per-(filter, tap) table, so every window is one contiguous
// XOR/popcount loop of kh * kw * words words (vectorised with AVX-512 VPOPCNTQ where the compiler may).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

namespace {

inline int64_t words_for(int64_t channels) { return (channels + 63) / 64; }

torch::Tensor pack_input(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat, "pack_input: expected float [B, C, H, W]");
  auto x = input.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), words = words_for(C);
  auto out = torch::zeros({B, H, W, words}, torch::kInt64);
  const float* px = x.data_ptr<float>();
  auto* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, y = bh % H;
      uint64_t* row = po + bh * W * words;
      for (int64_t c = 0; c < C; ++c) {
        const float* src = px + ((b * C + c) * H + y) * W;
        const uint64_t bit = uint64_t{1} << (c & 63);
        uint64_t* dst = row + (c >> 6);
        for (int64_t i = 0; i < W; ++i) {
          if (src[i] >= 0.f) dst[i * words] |= bit;
        }
      }
    }
  });
  return out;
}

torch::Tensor pack_weight(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kFloat, "pack_weight: expected float [O, C, kh, kw]");
  auto w = weight.contiguous();
  const int64_t O = w.size(0), C = w.size(1), KH = w.size(2), KW = w.size(3), words = words_for(C);
  auto out = torch::zeros({O, KH * KW * words}, torch::kInt64);
  const float* pw = w.data_ptr<float>();
  auto* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < KH * KW; ++t)
        if (pw[(o * C + c) * KH * KW + t] >= 0.f) po[o * KH * KW * words + t * words + (c >> 6)] |= uint64_t{1} << (c & 63);
  return out;
}

inline int64_t mismatches(const uint64_t* a, const uint64_t* b, int64_t n) {
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) count += __builtin_popcountll(a[k] ^ b[k]);
  return count;
}

torch::Tensor xnor_conv2d(const torch::Tensor& xpacked, const torch::Tensor& wpacked, int64_t channels,
                          int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                          int64_t dil_h, int64_t dil_w) {
  TORCH_CHECK(xpacked.dim() == 4 && xpacked.scalar_type() == torch::kInt64, "xnor_conv2d: packed input must be int64 [B, H, W, words]");
  TORCH_CHECK(wpacked.dim() == 2 && wpacked.scalar_type() == torch::kInt64, "xnor_conv2d: packed weight must be int64 [O, taps * words]");
  const int64_t B = xpacked.size(0), H = xpacked.size(1), W = xpacked.size(2), words = xpacked.size(3);
  const int64_t O = wpacked.size(0), taps = kh * kw, L = taps * words;
  TORCH_CHECK(words == words_for(channels), "xnor_conv2d: input has ", words, " words per pixel, ", channels, " channels need ", words_for(channels));
  TORCH_CHECK(wpacked.size(1) == L, "xnor_conv2d: weight has ", wpacked.size(1), " words per filter, expected ", L);
  const int64_t Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) / stride_h + 1;
  const int64_t Wo = (W + 2 * pad_w - dil_w * (kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "xnor_conv2d: empty output");
  auto xp = xpacked.contiguous();
  auto wp = wpacked.contiguous();
  const auto* px = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  const auto* pw = reinterpret_cast<const uint64_t*>(wp.data_ptr<int64_t>());
  // popcount of each filter's tap: the mismatches an all-zero (padding) tap adds
  std::vector<int32_t> tap_ones(O * taps);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      int32_t n = 0;
      for (int64_t k = 0; k < words; ++k) n += __builtin_popcountll(pw[o * L + t * words + k]);
      tap_ones[o * taps + t] = n;
    }
  auto out = torch::empty({B, O, Ho, Wo}, torch::kFloat);
  float* pout = out.data_ptr<float>();
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> window(L);
    std::vector<int64_t> outside;
    outside.reserve(taps);
    for (int64_t by = begin; by < end; ++by) {
      const int64_t b = by / Ho, oy = by % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        outside.clear();
        for (int64_t ty = 0; ty < kh; ++ty) {
          const int64_t iy = oy * stride_h - pad_h + ty * dil_h;
          for (int64_t tx = 0; tx < kw; ++tx) {
            const int64_t ix = ox * stride_w - pad_w + tx * dil_w, t = ty * kw + tx;
            uint64_t* dst = window.data() + t * words;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
              for (int64_t k = 0; k < words; ++k) dst[k] = 0;
              outside.push_back(t);
            } else {
              const uint64_t* src = px + ((b * H + iy) * W + ix) * words;
              for (int64_t k = 0; k < words; ++k) dst[k] = src[k];
            }
          }
        }
        const int64_t valid = taps - static_cast<int64_t>(outside.size());
        float* dst = pout + (b * O * Ho + oy) * Wo + ox;
        for (int64_t o = 0; o < O; ++o) {
          int64_t miss = mismatches(window.data(), pw + o * L, L);
          for (int64_t t : outside) miss -= tap_ones[o * taps + t];
          dst[o * Ho * Wo] = static_cast<float>(valid * channels - 2 * miss);
        }
      }
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_input", &pack_input, "sign bits of float [B, C, H, W] -> int64 [B, H, W, words]");
  m.def("pack_weight", &pack_weight, "sign bits of float [O, C, kh, kw] -> int64 [O, kh * kw * words]");
  m.def("xnor_conv2d", &xnor_conv2d, "binary conv by XNOR + popcount -> float [B, O, Ho, Wo]");
}
