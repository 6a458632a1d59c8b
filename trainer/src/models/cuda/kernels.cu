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

// y = act(x + bias[column]) over a contiguous [rows, cols] matrix: a linear layer's bias
// and activation in one pass (candle adds a broadcast bias with a strided kernel several
// times slower than memory speed). act: 0 none, 1 quick_gelu (CLIP-L), 2 exact gelu.
template <typename T>
__device__ void bias_act(const T *x, const T *bias, T *y, uint64_t n, uint32_t cols, int act) {
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x) {
    float v = to_f(x[i]) + to_f(bias[i % cols]);
    if (act == 1) v = v / (1.f + __expf(-1.702f * v));
    else if (act == 2) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    y[i] = from_f<T>(v);
  }
}

// Softmax over the last dimension of [..., len, len] attention scores with the causal mask
// applied on the fly (key j > query i gets probability 0): the mask's broadcast add and the
// softmax in one pass. One warp per row, arithmetic in f32.
template <typename T>
__device__ void causal_softmax(const T *x, T *y, uint64_t rows, uint32_t len) {
  const uint64_t row = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const uint32_t query = row % len;
  const T *src = x + row * len;
  T *dst = y + row * len;
  float m = -INFINITY;
  for (uint32_t j = lane; j <= query; j += 32) m = fmaxf(m, to_f(src[j]));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
  float s = 0.f;
  for (uint32_t j = lane; j <= query; j += 32) s += __expf(to_f(src[j]) - m);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
  const float inv = 1.f / s;
  for (uint32_t j = lane; j < len; j += 32)
    dst[j] = from_f<T>(j <= query ? __expf(to_f(src[j]) - m) * inv : 0.f);
}

#define TEXT_KERNELS(T, SUFFIX)                                                                \
  extern "C" __global__ void bias_act_##SUFFIX(const T *x, const T *bias, T *y, uint64_t n,    \
                                               uint32_t cols, int act) {                       \
    bias_act<T>(x, bias, y, n, cols, act);                                                     \
  }                                                                                            \
  extern "C" __global__ void causal_softmax_##SUFFIX(const T *x, T *y, uint64_t rows,          \
                                                     uint32_t len) {                           \
    causal_softmax<T>(x, y, rows, len);                                                        \
  }
TEXT_KERNELS(float, f32)
TEXT_KERNELS(__nv_bfloat16, bf16)
TEXT_KERNELS(__half, f16)

// Causal self-attention for short sequences (CLIP's 77 tokens), straight from the fused QKV
// projection's output [batch, len, 3, heads, d] to [batch, len, heads, d]: no head
// transposes, no score tensor in memory, scores and softmax in f32. One block per
// (head, sample) holds that head's keys and values in shared memory (rows padded by one
// float so lanes reading different keys hit different banks); each warp takes queries in
// turn. The query is expected pre-scaled (CLIP folds 1/sqrt(d) into its weights).
template <typename T>
__device__ void causal_attention(const T *qkv, T *y, uint32_t len, uint32_t heads, uint32_t d) {
  extern __shared__ float smem[];
  const uint32_t head = blockIdx.x, b = blockIdx.y;
  const uint32_t h = heads * d, row = 3 * h, dp = d + 1;
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  float *K = smem, *V = K + len * dp, *Q = V + len * dp, *P = Q + warps * d;
  const T *base = qkv + (uint64_t)b * len * row;
  for (uint32_t idx = threadIdx.x; idx < len * d; idx += blockDim.x) {
    const uint32_t t = idx / d, e = idx % d;
    K[t * dp + e] = to_f(base[(uint64_t)t * row + h + head * d + e]);
    V[t * dp + e] = to_f(base[(uint64_t)t * row + 2 * h + head * d + e]);
  }
  __syncthreads();
  float *q = Q + warp * d, *p = P + warp * len;
  for (uint32_t i = warp; i < len; i += warps) {
    for (uint32_t e = lane; e < d; e += 32) q[e] = to_f(base[(uint64_t)i * row + head * d + e]);
    __syncwarp();
    float m = -INFINITY;
    for (uint32_t j = lane; j <= i; j += 32) {
      float s = 0.f;
      for (uint32_t e = 0; e < d; e++) s += q[e] * K[j * dp + e];
      p[j] = s;
      m = fmaxf(m, s);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    float sum = 0.f;
    for (uint32_t j = lane; j <= i; j += 32) {
      const float v = __expf(p[j] - m);
      p[j] = v;
      sum += v;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    __syncwarp();
    const float inv = 1.f / sum;
    for (uint32_t e = lane; e < d; e += 32) {
      float acc = 0.f;
      for (uint32_t j = 0; j <= i; j++) acc += p[j] * V[j * dp + e];
      y[((uint64_t)b * len + i) * h + head * d + e] = from_f<T>(acc * inv);
    }
    __syncwarp();
  }
}

// The same for heads of width 64 (CLIP-L's and OpenCLIP-H's), tuned: the query in registers,
// keys read as float4 (rows padded to 68 floats: 16-byte aligned, and the 8 lanes of each
// 128-bit phase land on distinct banks), values as float2, eight warps per block.
template <typename T>
__device__ void causal_attention64(const T *qkv, T *y, uint32_t len, uint32_t heads) {
  constexpr uint32_t D = 64, DP = 68;
  extern __shared__ float4 smem4[];
  float *smem = reinterpret_cast<float *>(smem4);
  const uint32_t head = blockIdx.x, b = blockIdx.y;
  const uint32_t h = heads * D, row = 3 * h;
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  float *K = smem, *V = K + len * DP, *Q = V + len * DP, *P = Q + warps * D;
  const T *base = qkv + (uint64_t)b * len * row;
  for (uint32_t idx = threadIdx.x; idx < len * D; idx += blockDim.x) {
    const uint32_t t = idx / D, e = idx % D;
    K[t * DP + e] = to_f(base[(uint64_t)t * row + h + head * D + e]);
    V[t * DP + e] = to_f(base[(uint64_t)t * row + 2 * h + head * D + e]);
  }
  __syncthreads();
  float *qs = Q + warp * D, *p = P + warp * len;
  for (uint32_t i = warp; i < len; i += warps) {
    for (uint32_t e = lane; e < D; e += 32) qs[e] = to_f(base[(uint64_t)i * row + head * D + e]);
    __syncwarp();
    float4 q[D / 4];
#pragma unroll
    for (int c = 0; c < D / 4; c++) q[c] = reinterpret_cast<const float4 *>(qs)[c];
    float m = -INFINITY;
    for (uint32_t j = lane; j <= i; j += 32) {
      const float4 *k = reinterpret_cast<const float4 *>(K + j * DP);
      float s = 0.f;
#pragma unroll
      for (int c = 0; c < D / 4; c++) {
        const float4 kv = k[c];
        s += q[c].x * kv.x + q[c].y * kv.y + q[c].z * kv.z + q[c].w * kv.w;
      }
      p[j] = s;
      m = fmaxf(m, s);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    float sum = 0.f;
    for (uint32_t j = lane; j <= i; j += 32) {
      const float v = __expf(p[j] - m);
      p[j] = v;
      sum += v;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    __syncwarp();
    const float inv = 1.f / sum;
    float2 acc = make_float2(0.f, 0.f);
    for (uint32_t j = 0; j <= i; j++) {
      const float pj = p[j];
      const float2 v = reinterpret_cast<const float2 *>(V + j * DP)[lane];
      acc.x += pj * v.x;
      acc.y += pj * v.y;
    }
    T *out = y + ((uint64_t)b * len + i) * h + head * D + 2 * lane;
    out[0] = from_f<T>(acc.x * inv);
    out[1] = from_f<T>(acc.y * inv);
    __syncwarp();
  }
}

#define ATTENTION_KERNEL(T, SUFFIX)                                                            \
  extern "C" __global__ void causal_attention_##SUFFIX(const T *qkv, T *y, uint32_t len,       \
                                                       uint32_t heads, uint32_t d) {           \
    causal_attention<T>(qkv, y, len, heads, d);                                                \
  }                                                                                            \
  extern "C" __global__ void causal_attention64_##SUFFIX(const T *qkv, T *y, uint32_t len,     \
                                                         uint32_t heads) {                     \
    causal_attention64<T>(qkv, y, len, heads);                                                 \
  }
ATTENTION_KERNEL(float, f32)
ATTENTION_KERNEL(__nv_bfloat16, bf16)
ATTENTION_KERNEL(__half, f16)

// ---- AdamW (training) -------------------------------------------------------------------
// Gradient clipping and AdamW without a round trip to the host: sumsq_f32 adds each tensor's
// sum of squares into one accumulator (a block reduction and one atomic per block), and
// adamw_f32 reads it, scales the gradient by min(1, max_norm / (norm + 1e-6)) (torch's
// clip_grad_norm_; max_norm <= 0: no clipping), then applies torch.optim.AdamW's arithmetic:
// decoupled decay, moments, bias-corrected step. w, m, v (f32) are updated in place.
extern "C" __global__ void sumsq_f32(const float *g, uint64_t n, float *acc) {
  __shared__ float sh[32];
  float s = 0.f;
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x)
    s += g[i] * g[i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if (lane == 0) atomicAdd(acc, s);
  }
}

extern "C" __global__ void adamw_f32(float *w, const float *g, float *m, float *v, uint64_t n,
                                     float lr, float beta1, float beta2, float eps, float decay,
                                     float step_size, float bias2_sqrt, const float *sumsq,
                                     float max_norm) {
  const float scale = max_norm > 0.f ? fminf(1.f, max_norm / (sqrtf(*sumsq) + 1e-6f)) : 1.f;
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const float gi = g[i] * scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    const float wi = w[i] * (1.0f - lr * decay);
    w[i] = wi - step_size * (mi / (sqrtf(vi) / bias2_sqrt + eps));
    m[i] = mi;
    v[i] = vi;
  }
}

// ---- Training: attention gradient and GEGLU ---------------------------------------------
// dS = P * (dP - delta[row]) over [rows, cols] scores, arithmetic in f32: the softmax
// gradient in one pass (FlashAttention's formula; delta = rowsum(dO * O) comes in f32).
template <typename T>
__device__ void attn_ds(const T *p, const T *dp, const float *delta, T *ds, uint64_t n,
                        uint32_t cols) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x)
    ds[i] = from_f<T>(to_f(p[i]) * (to_f(dp[i]) - delta[i / cols]));
}

__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}

// GEGLU over [rows, 2 * half]: y = a * gelu(b) with a the first half of each row, b the second
// (diffusers' GEGLU with the exact GELU).
template <typename T>
__device__ void geglu(const T *h, T *y, uint64_t n, uint32_t half) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t r = i / half, j = i % half;
    const float a = to_f(h[r * 2 * half + j]), b = to_f(h[r * 2 * half + half + j]);
    y[i] = from_f<T>(a * gelu_erf(b));
  }
}

// Its gradient: dh[a] = dy * gelu(b), dh[b] = dy * a * gelu'(b).
template <typename T>
__device__ void geglu_bwd(const T *h, const T *dy, T *dh, uint64_t n, uint32_t half) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t r = i / half, j = i % half;
    const uint64_t ia = r * 2 * half + j, ib = ia + half;
    const float a = to_f(h[ia]), b = to_f(h[ib]), g = to_f(dy[i]);
    const float cdf = 0.5f * (1.f + erff(b * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * __expf(-0.5f * b * b);
    dh[ia] = from_f<T>(g * b * cdf);
    dh[ib] = from_f<T>(g * a * (cdf + b * pdf));
  }
}

#define TRAIN_KERNELS(T, SUFFIX)                                                               \
  extern "C" __global__ void attn_ds_##SUFFIX(const T *p, const T *dp, const float *delta,     \
                                              T *ds, uint64_t n, uint32_t cols) {              \
    attn_ds<T>(p, dp, delta, ds, n, cols);                                                     \
  }                                                                                            \
  extern "C" __global__ void geglu_##SUFFIX(const T *h, T *y, uint64_t n, uint32_t half) {     \
    geglu<T>(h, y, n, half);                                                                   \
  }                                                                                            \
  extern "C" __global__ void geglu_bwd_##SUFFIX(const T *h, const T *dy, T *dh, uint64_t n,    \
                                                uint32_t half) {                               \
    geglu_bwd<T>(h, dy, dh, n, half);                                                          \
  }
TRAIN_KERNELS(float, f32)
TRAIN_KERNELS(__nv_bfloat16, bf16)
TRAIN_KERNELS(__half, f16)

// ---- Training: GroupNorm and LayerNorm gradients ------------------------------------------
// Shared by both: with x̂ = (x - mean) * rstd, z = x̂ * w + b, dz = dy (* silu'(z)) and
// dn = dz * w, the input gradient is rstd * (dn - mean(dn) - x̂ * mean(dn * x̂)).

__device__ __forceinline__ float block_sum(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float t = lane < warps ? sh[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffff, t, o);
  return t;
}

__device__ __forceinline__ float silu_grad(float z) {
  const float s = 1.f / (1.f + __expf(-z));
  return s * (1.f + z * (1.f - s));
}

// Mean and 1/std of each (sample, group): one block per group of `len` contiguous elements.
template <typename T>
__device__ void gnb_stats(const T *x, float *mean, float *rstd, uint64_t len, float eps) {
  __shared__ float sh[32];
  const T *g = x + blockIdx.x * len;
  const float shift = to_f(g[0]);
  float s = 0.f, s2 = 0.f;
  for (uint64_t i = threadIdx.x; i < len; i += blockDim.x) {
    const float v = to_f(g[i]) - shift;
    s += v;
    s2 += v * v;
  }
  s = block_sum(s, sh);
  s2 = block_sum(s2, sh);
  if (threadIdx.x == 0) {
    const float m = s / len;
    mean[blockIdx.x] = shift + m;
    rstd[blockIdx.x] = rsqrtf(fmaxf(s2 / len - m * m, 0.f) + eps);
  }
}

// Per (sample, channel) row of `plane` elements: A = sum(dz * x̂), B = sum(dz).
template <typename T>
__device__ void gnb_reduce(const T *x, const T *dy, const T *w, const T *b, const float *mean,
                           const float *rstd, float *A, float *B, uint64_t plane,
                           uint32_t channels, uint32_t per_group, int silu) {
  __shared__ float sh[32];
  const uint64_t row = blockIdx.x;
  const uint32_t c = row % channels;
  const uint64_t grp = (row / channels) * (channels / per_group) + c / per_group;
  const float m = mean[grp], r = rstd[grp], wc = to_f(w[c]), bc = to_f(b[c]);
  float a = 0.f, bb = 0.f;
  for (uint64_t i = threadIdx.x; i < plane; i += blockDim.x) {
    const uint64_t k = row * plane + i;
    const float xh = (to_f(x[k]) - m) * r;
    float dz = to_f(dy[k]);
    if (silu) dz *= silu_grad(xh * wc + bc);
    a += dz * xh;
    bb += dz;
  }
  a = block_sum(a, sh);
  bb = block_sum(bb, sh);
  if (threadIdx.x == 0) {
    A[row] = a;
    B[row] = bb;
  }
}

// dx per element; one block per (sample, channel) row, the group's sums gathered from A, B.
template <typename T>
__device__ void gnb_apply(const T *x, const T *dy, const T *w, const T *b, const float *mean,
                          const float *rstd, const float *A, const float *B, T *dx,
                          uint64_t plane, uint32_t channels, uint32_t per_group, int silu) {
  const uint64_t row = blockIdx.y;
  const uint32_t c = row % channels;
  const uint64_t n = row / channels;
  const uint64_t grp = n * (channels / per_group) + c / per_group;
  const uint32_t c0 = (c / per_group) * per_group;
  float sdn = 0.f, sdnx = 0.f;
  for (uint32_t j = 0; j < per_group; j++) {
    const float wj = to_f(w[c0 + j]);
    sdn += wj * B[n * channels + c0 + j];
    sdnx += wj * A[n * channels + c0 + j];
  }
  const float count = (float)per_group * (float)plane;
  const float mdn = sdn / count, mdnx = sdnx / count;
  const float m = mean[grp], r = rstd[grp], wc = to_f(w[c]), bc = to_f(b[c]);
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < plane;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t k = row * plane + i;
    const float xh = (to_f(x[k]) - m) * r;
    float dz = to_f(dy[k]);
    if (silu) dz *= silu_grad(xh * wc + bc);
    dx[k] = from_f<T>(r * (dz * wc - mdn - xh * mdnx));
  }
}

// LayerNorm over rows of `cols`: one block per row for dx, and per-block partial sums of
// dz * x̂ and dz per column (PA, PB: [gridDim.x, cols]) for the weight and bias gradients.
// Each block handles `rows_per_block` rows; cols <= 8 * blockDim.x.
template <typename T>
__device__ void lnb(const T *x, const T *dy, const T *w, T *dx, float *PA, float *PB,
                    uint64_t rows, uint32_t cols, uint32_t rows_per_block, float eps) {
  __shared__ float sh[32];
  float pa[8], pb[8];
#pragma unroll
  for (int k = 0; k < 8; k++) pa[k] = pb[k] = 0.f;
  const uint64_t first = (uint64_t)blockIdx.x * rows_per_block;
  for (uint64_t r = first; r < min(first + rows_per_block, rows); r++) {
    const T *xr = x + r * cols;
    const T *gr = dy + r * cols;
    float s = 0.f, s2 = 0.f;
    const float shift = to_f(xr[0]);
    for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = to_f(xr[j]) - shift;
      s += v;
      s2 += v * v;
    }
    s = block_sum(s, sh);
    s2 = block_sum(s2, sh);
    const float mu = s / cols;
    const float mean = shift + mu, rs = rsqrtf(fmaxf(s2 / cols - mu * mu, 0.f) + eps);
    float sdn = 0.f, sdnx = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) {
      const uint32_t j = threadIdx.x + k * blockDim.x;
      if (j < cols) {
        const float xh = (to_f(xr[j]) - mean) * rs, dz = to_f(gr[j]), dn = dz * to_f(w[j]);
        sdn += dn;
        sdnx += dn * xh;
        pa[k] += dz * xh;
        pb[k] += dz;
      }
    }
    sdn = block_sum(sdn, sh) / cols;
    sdnx = block_sum(sdnx, sh) / cols;
#pragma unroll
    for (int k = 0; k < 8; k++) {
      const uint32_t j = threadIdx.x + k * blockDim.x;
      if (j < cols) {
        const float xh = (to_f(xr[j]) - mean) * rs, dn = to_f(gr[j]) * to_f(w[j]);
        dx[r * cols + j] = from_f<T>(rs * (dn - sdn - xh * sdnx));
      }
    }
  }
#pragma unroll
  for (int k = 0; k < 8; k++) {
    const uint32_t j = threadIdx.x + k * blockDim.x;
    if (j < cols) {
      PA[(uint64_t)blockIdx.x * cols + j] = pa[k];
      PB[(uint64_t)blockIdx.x * cols + j] = pb[k];
    }
  }
}

#define NORM_BWD_KERNELS(T, SUFFIX)                                                            \
  extern "C" __global__ void gnb_stats_##SUFFIX(const T *x, float *mean, float *rstd,          \
                                                uint64_t len, float eps) {                     \
    gnb_stats<T>(x, mean, rstd, len, eps);                                                     \
  }                                                                                            \
  extern "C" __global__ void gnb_reduce_##SUFFIX(                                              \
      const T *x, const T *dy, const T *w, const T *b, const float *mean, const float *rstd,   \
      float *A, float *B, uint64_t plane, uint32_t channels, uint32_t per_group, int silu) {   \
    gnb_reduce<T>(x, dy, w, b, mean, rstd, A, B, plane, channels, per_group, silu);            \
  }                                                                                            \
  extern "C" __global__ void gnb_apply_##SUFFIX(                                               \
      const T *x, const T *dy, const T *w, const T *b, const float *mean, const float *rstd,   \
      const float *A, const float *B, T *dx, uint64_t plane, uint32_t channels,                \
      uint32_t per_group, int silu) {                                                          \
    gnb_apply<T>(x, dy, w, b, mean, rstd, A, B, dx, plane, channels, per_group, silu);         \
  }                                                                                            \
  extern "C" __global__ void lnb_##SUFFIX(const T *x, const T *dy, const T *w, T *dx,          \
                                          float *PA, float *PB, uint64_t rows, uint32_t cols,  \
                                          uint32_t rows_per_block, float eps) {                \
    lnb<T>(x, dy, w, dx, PA, PB, rows, cols, rows_per_block, eps);                             \
  }
NORM_BWD_KERNELS(float, f32)
NORM_BWD_KERNELS(__nv_bfloat16, bf16)
NORM_BWD_KERNELS(__half, f16)

// Softmax over rows of `cols` attention scores, f32 arithmetic, one block per row: one pass
// for the running max and sum (merged across threads), one to write. candle's kernel gives a
// row one warp and makes an extra pass to rescale.
template <typename T>
__device__ void softmax_rows(const T *x, T *y, uint32_t cols) {
  __shared__ float shm[32], shs[32];
  const T *src = x + (uint64_t)blockIdx.x * cols;
  T *dst = y + (uint64_t)blockIdx.x * cols;
  float m = -INFINITY, s = 0.f;
  for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = to_f(src[j]);
    if (v > m) {
      s = s * __expf(m - v) + 1.f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffff, m, o), os = __shfl_xor_sync(0xffffffff, s, o);
    const float nm = fmaxf(m, om);
    s = (m == -INFINITY ? 0.f : s * __expf(m - nm)) + (om == -INFINITY ? 0.f : os * __expf(om - nm));
    m = nm;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    shm[warp] = m;
    shs[warp] = s;
  }
  __syncthreads();
  m = lane < warps ? shm[lane] : -INFINITY;
  s = lane < warps ? shs[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffff, m, o), os = __shfl_xor_sync(0xffffffff, s, o);
    const float nm = fmaxf(m, om);
    s = (m == -INFINITY ? 0.f : s * __expf(m - nm)) + (om == -INFINITY ? 0.f : os * __expf(om - nm));
    m = nm;
  }
  const float inv = 1.f / s;
  for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x) dst[j] = from_f<T>(__expf(to_f(src[j]) - m) * inv);
}

#define SOFTMAX_KERNELS(T, SUFFIX)                                                             \
  extern "C" __global__ void softmax_rows_##SUFFIX(const T *x, T *y, uint32_t cols) {          \
    softmax_rows<T>(x, y, cols);                                                               \
  }
SOFTMAX_KERNELS(float, f32)
SOFTMAX_KERNELS(__nv_bfloat16, bf16)
SOFTMAX_KERNELS(__half, f16)
