// ldmkit's own CUDA kernels (compiled to PTX by trainer/build.rs with the `cuda` feature).
//
// GroupNorm (+ optional SiLU) on NCHW activations in three launches: partial moments per
// (sample, group, chunk), a tiny finalize into one per-(sample, channel) scale and shift, and
// one elementwise pass. Two reads and one write of the activation: memory speed, where
// candle-nn's nine full-tensor passes were the VAE encoder's bottleneck.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// Sums of (x - shift) and (x - shift)^2 over one chunk of one group. The shift is the group's
// first element, so the variance does not suffer E[x^2] - E[x]^2 cancellation when the mean
// is large against the spread. grid = (chunks, groups_total), partials[(g * chunks + c) * 2].
template <typename T>
__device__ void gn_partial(const T *x, float *partials, uint64_t group_len, uint64_t chunk_len) {
  const uint64_t g = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
  const T *base = x + g * group_len;
  const float shift = to_f(base[0]);
  uint64_t start = chunk * chunk_len;
  uint64_t end = min(start + chunk_len, group_len);
  float s = 0.f, s2 = 0.f;
  for (uint64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    float v = to_f(base[i]) - shift;
    s += v;
    s2 += v * v;
  }
  __shared__ float sh[2][32];
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffff, s, o);
    s2 += __shfl_down_sync(0xffffffff, s2, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sh[0][warp] = s; sh[1][warp] = s2; }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    s = lane < warps ? sh[0][lane] : 0.f;
    s2 = lane < warps ? sh[1][lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
      s += __shfl_down_sync(0xffffffff, s, o);
      s2 += __shfl_down_sync(0xffffffff, s2, o);
    }
    if (lane == 0) {
      partials[(g * chunks + chunk) * 2] = s;
      partials[(g * chunks + chunk) * 2 + 1] = s2;
    }
  }
}

// One thread per (sample, group): mean and 1/std from the partials (in double), then per
// channel of the group: scale = w / std, shift = b - mean * scale.
template <typename T>
__device__ void gn_finalize(const T *x, const float *partials, const T *weight, const T *bias,
                            float *scale, float *shift, uint32_t groups_total, uint32_t groups,
                            uint32_t chunks, uint64_t group_len, uint32_t channels_per_group,
                            float eps) {
  const uint32_t g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups_total) return;
  double s = 0.0, s2 = 0.0;
  for (uint32_t c = 0; c < chunks; c++) {
    s += partials[(g * chunks + c) * 2];
    s2 += partials[(g * chunks + c) * 2 + 1];
  }
  const double n = (double)group_len;
  const double m = s / n;
  double var = s2 / n - m * m;
  if (var < 0.0) var = 0.0;
  const double mean = m + (double)to_f(x[(uint64_t)g * group_len]);
  const float inv = (float)(1.0 / sqrt(var + (double)eps));
  const uint32_t first = g * channels_per_group;      // (sample, channel) row
  const uint32_t in_group = g % groups;                // group within the sample
  for (uint32_t j = 0; j < channels_per_group; j++) {
    const uint32_t ch = in_group * channels_per_group + j;
    const float sc = to_f(weight[ch]) * inv;
    scale[first + j] = sc;
    shift[first + j] = to_f(bias[ch]) - (float)mean * sc;
  }
}

// grid = (chunks over the plane, sample * channels); y = x * scale + shift, then SiLU.
template <typename T>
__device__ void gn_apply(const T *x, T *y, const float *scale, const float *shift, uint64_t plane,
                         int silu) {
  const uint64_t row = blockIdx.y;
  const float sc = scale[row], sh = shift[row];
  const T *src = x + row * plane;
  T *dst = y + row * plane;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
       i += (uint64_t)gridDim.x * blockDim.x) {
    float v = to_f(src[i]) * sc + sh;
    if (silu) v = v / (1.f + __expf(-v));
    dst[i] = from_f<T>(v);
  }
}

#define GN_KERNELS(T, SUFFIX)                                                                  \
  extern "C" __global__ void gn_partial_##SUFFIX(const T *x, float *partials,                  \
                                                 uint64_t group_len, uint64_t chunk_len) {     \
    gn_partial<T>(x, partials, group_len, chunk_len);                                          \
  }                                                                                            \
  extern "C" __global__ void gn_finalize_##SUFFIX(                                             \
      const T *x, const float *partials, const T *weight, const T *bias, float *scale,         \
      float *shift, uint32_t groups_total, uint32_t groups, uint32_t chunks,                   \
      uint64_t group_len, uint32_t channels_per_group, float eps) {                            \
    gn_finalize<T>(x, partials, weight, bias, scale, shift, groups_total, groups, chunks,      \
                   group_len, channels_per_group, eps);                                        \
  }                                                                                            \
  extern "C" __global__ void gn_apply_##SUFFIX(const T *x, T *y, const float *scale,           \
                                               const float *shift, uint64_t plane, int silu) { \
    gn_apply<T>(x, y, scale, shift, plane, silu);                                              \
  }

GN_KERNELS(float, f32)
GN_KERNELS(__nv_bfloat16, bf16)
GN_KERNELS(__half, f16)

// One zero row at the bottom and one zero column at the right of every plane (the LDM
// downsampler's asymmetric padding) in one pass. grid = (chunks, planes).
template <typename T>
__device__ void pad_right_bottom(const T *x, T *y, uint32_t h, uint32_t w) {
  const uint64_t plane = blockIdx.y;
  const uint32_t ow = w + 1, oh = h + 1;
  const uint64_t out_len = (uint64_t)oh * ow;
  const T *src = x + plane * h * w;
  T *dst = y + plane * out_len;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < out_len;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const uint32_t r = i / ow, c = i % ow;
    dst[i] = (r < h && c < w) ? src[(uint64_t)r * w + c] : from_f<T>(0.f);
  }
}

#define PAD_KERNEL(T, SUFFIX)                                                                  \
  extern "C" __global__ void pad_rb_##SUFFIX(const T *x, T *y, uint32_t h, uint32_t w) {      \
    pad_right_bottom<T>(x, y, h, w);                                                           \
  }
PAD_KERNEL(float, f32)
PAD_KERNEL(__nv_bfloat16, bf16)
PAD_KERNEL(__half, f16)
