// FlashAttention-2 (Dao, 2023) forward and backward for the UNet's attention, bf16 in, f32
// accumulation, on the tensor cores through mma.sync m16n8k16 (compiled to PTX by
// trainer/build.rs with the `cuda` feature).
//
// Operands are the linear layers' outputs as they are, [batch, len, heads * D] row-major: a
// head is a column slice, so no transposes are needed before or after. Each block of 4 warps
// owns 64 rows (16 per warp) and streams the other operand through shared memory in tiles of
// 64 rows. Score tiles never leave registers: an mma's f32 accumulator fragment is laid out
// exactly as the next mma's bf16 A fragment wants it, so P (or dS) goes straight from one
// product into the next.
//
//   forward : O = softmax(scale Q Kᵀ) V, and L = log2-sum-exp2 of each row (kept for the
//             backward instead of the probabilities).
//   delta   : δ = rowsum(dO ⊙ O).
//   dq      : per block of query rows, over all key tiles: P = exp2(scale·log2e·QKᵀ − L),
//             dS = P ⊙ (dO Vᵀ − δ), dQ = scale dS K.
//   dkdv    : per block of key rows, over all query tiles: dV = Pᵀ dO, dK = scale dSᵀ Q.
// Splitting dQ from dK/dV recomputes QKᵀ and dO Vᵀ once more but needs no atomics.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4:
//   A (16×16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16×8) : b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16×8) : c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

namespace {

constexpr int ROWS = 64;  // rows per block and per streamed tile
constexpr int THREADS = 128;

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t ld32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

// Two bf16 one row apart (a B fragment's k pair when the tile is stored k-major).
__device__ __forceinline__ uint32_t ld_pair(const bf16 *p, int stride) {
  uint32_t lo = *reinterpret_cast<const uint16_t *>(p);
  uint32_t hi = *reinterpret_cast<const uint16_t *>(p + stride);
  return lo | (hi << 16);
}

__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D> struct Dims {
  static constexpr int DP = (D + 15) / 16 * 16;  // head dim padded to whole k-chunks
  static constexpr int KC = DP / 16;             // k-chunks over the head dim
  static constexpr int NT = D / 8;               // n-tiles over the head dim
  static constexpr int STRIDE = DP + 8;          // shared row stride: conflict-free fragment loads
  static_assert(D % 8 == 0, "head dim must be a multiple of 8");
};

// Rows [row0, row0 + 64) of one head (`g` points at row 0, column h·D) into shared memory,
// zero past `rows` and in the padding columns. 16-byte loads: D and the row pitch `c` are
// multiples of 8 elements and the host checks the base is 16-byte aligned.
template <int D>
__device__ __forceinline__ void load_tile(bf16 (*s)[Dims<D>::STRIDE], const bf16 *g, int row0, int rows,
                                          int c) {
  constexpr int VEC = Dims<D>::DP / 8;
  for (int i = threadIdx.x; i < ROWS * VEC; i += THREADS) {
    const int r = i / VEC, col = (i % VEC) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < rows && col < D) v = *reinterpret_cast<const uint4 *>(g + (size_t)(row0 + r) * c + col);
    *reinterpret_cast<uint4 *>(&s[r][col]) = v;
  }
}

// A fragments of a warp's 16 rows (from row r0 of a shared tile) over the whole head dim.
template <int D>
__device__ __forceinline__ void load_a(uint32_t a[][4], bf16 (*s)[Dims<D>::STRIDE], int r0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int kc = 0; kc < Dims<D>::KC; kc++) {
    a[kc][0] = ld32(&s[r0 + g][kc * 16 + 2 * t]);
    a[kc][1] = ld32(&s[r0 + g + 8][kc * 16 + 2 * t]);
    a[kc][2] = ld32(&s[r0 + g][kc * 16 + 2 * t + 8]);
    a[kc][3] = ld32(&s[r0 + g + 8][kc * 16 + 2 * t + 8]);
  }
}

// acc[j] (16 × 64) = A (16 × D) · Tᵀ for the 64 rows of the shared tile T (rows are n).
template <int D>
__device__ __forceinline__ void product_nt(float acc[8][4], const uint32_t a[][4], bf16 (*s)[Dims<D>::STRIDE]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < 8; j++) {
    acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < Dims<D>::KC; kc++)
      mma(acc[j], a[kc], ld32(&s[j * 8 + g][kc * 16 + 2 * t]), ld32(&s[j * 8 + g][kc * 16 + 2 * t + 8]));
  }
}

// acc (16 × D) += X (16 × 64, as accumulator fragments x[j]) · T for the shared tile T (rows are k).
template <int D>
__device__ __forceinline__ void product_nn(float acc[][4], const float x[8][4], bf16 (*s)[Dims<D>::STRIDE]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  constexpr int ST = Dims<D>::STRIDE;
#pragma unroll
  for (int kc = 0; kc < 4; kc++) {
    const uint32_t a[4] = {pack(x[2 * kc][0], x[2 * kc][1]), pack(x[2 * kc][2], x[2 * kc][3]),
                           pack(x[2 * kc + 1][0], x[2 * kc + 1][1]), pack(x[2 * kc + 1][2], x[2 * kc + 1][3])};
#pragma unroll
    for (int nt = 0; nt < Dims<D>::NT; nt++)
      mma(acc[nt], a, ld_pair(&s[kc * 16 + 2 * t][nt * 8 + g], ST), ld_pair(&s[kc * 16 + 2 * t + 8][nt * 8 + g], ST));
  }
}

__device__ __forceinline__ float row_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
}
__device__ __forceinline__ float row_sum(float v) {
  v += __shfl_xor_sync(0xffffffff, v, 1);
  return v + __shfl_xor_sync(0xffffffff, v, 2);
}

// Writes a warp's 16 × D accumulator (times `mul`, row r also divided by div[r]) at rows
// row0.. of one head; rows at or past `rows` are skipped.
template <int D>
__device__ __forceinline__ void store_rows(bf16 *out, const float acc[][4], int row0, int rows, int c, float mul,
                                           const float div[2]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int row = row0 + g + 8 * r;
    if (row >= rows) continue;
    const float m = mul / div[r];
#pragma unroll
    for (int nt = 0; nt < Dims<D>::NT; nt++)
      *reinterpret_cast<uint32_t *>(out + (size_t)row * c + nt * 8 + 2 * t) =
          pack(acc[nt][2 * r] * m, acc[nt][2 * r + 1] * m);
  }
}

template <int D>
__device__ void flash_fwd(const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                          bf16 *__restrict__ o, float *__restrict__ lse, int lq, int lk, int heads,
                          float scale_log2) {
  using G = Dims<D>;
  __shared__ __align__(16) bf16 ks[ROWS][G::STRIDE];
  __shared__ __align__(16) bf16 vs[ROWS][G::STRIDE];
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads, c = heads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * ROWS;
  const bf16 *qb = q + (size_t)b * lq * c + h * D;
  const bf16 *kb = k + (size_t)b * lk * c + h * D;
  const bf16 *vb = v + (size_t)b * lk * c + h * D;

  uint32_t qa[G::KC][4];
  load_tile<D>(ks, qb, q0, lq, c);
  __syncthreads();
  load_a<D>(qa, ks, warp * 16);
  __syncthreads();

  float acc[G::NT][4];
#pragma unroll
  for (int nt = 0; nt < G::NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int k0 = 0; k0 < lk; k0 += ROWS) {
    load_tile<D>(ks, kb, k0, lk, c);
    load_tile<D>(vs, vb, k0, lk, c);
    __syncthreads();
    float s[8][4];
    product_nt<D>(s, qa, ks);
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int col = k0 + j * 8 + 2 * t + (e & 1);
        const float x = col < lk ? s[j][e] * scale_log2 : -INFINITY;
        s[j][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = row_max(mx[r]);
      alpha[r] = exp2f(m[r] - mx[r]);
      m[r] = mx[r];
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[j][e] = exp2f(s[j][e] - m[e >> 1]);
        sum[e >> 1] += s[j][e];
      }
#pragma unroll
    for (int r = 0; r < 2; r++) l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
    for (int nt = 0; nt < G::NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[nt][e] *= alpha[e >> 1];
    product_nn<D>(acc, s, vs);
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; r++) l[r] = row_sum(l[r]);
  const int row0 = q0 + warp * 16;
  store_rows<D>(o + (size_t)b * lq * c + h * D, acc, row0, lq, c, 1.f, l);
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = row0 + g + 8 * r;
      if (row < lq) lse[(size_t)bh * lq + row] = m[r] + log2f(l[r]);
    }
}

template <int D>
__device__ void flash_bwd_dq(const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                             const bf16 *__restrict__ dout, const float *__restrict__ lse,
                             const float *__restrict__ delta, bf16 *__restrict__ dq, int lq, int lk, int heads,
                             float scale_log2, float scale) {
  using G = Dims<D>;
  __shared__ __align__(16) bf16 ks[ROWS][G::STRIDE];
  __shared__ __align__(16) bf16 vs[ROWS][G::STRIDE];
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads, c = heads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * ROWS, row0 = q0 + warp * 16;
  const size_t qoff = (size_t)b * lq * c + h * D, koff = (size_t)b * lk * c + h * D;

  uint32_t qa[G::KC][4], da[G::KC][4];
  load_tile<D>(ks, q + qoff, q0, lq, c);
  load_tile<D>(vs, dout + qoff, q0, lq, c);
  __syncthreads();
  load_a<D>(qa, ks, warp * 16);
  load_a<D>(da, vs, warp * 16);
  __syncthreads();
  float lr[2], dr[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int row = row0 + g + 8 * r;
    lr[r] = row < lq ? lse[(size_t)bh * lq + row] : 0.f;
    dr[r] = row < lq ? delta[(size_t)bh * lq + row] : 0.f;
  }
  float acc[G::NT][4];
#pragma unroll
  for (int nt = 0; nt < G::NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;

  for (int k0 = 0; k0 < lk; k0 += ROWS) {
    load_tile<D>(ks, k + koff, k0, lk, c);
    load_tile<D>(vs, v + koff, k0, lk, c);
    __syncthreads();
    float p[8][4], dp[8][4];
    product_nt<D>(p, qa, ks);
    product_nt<D>(dp, da, vs);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int col = k0 + j * 8 + 2 * t + (e & 1);
        const float pe = col < lk ? exp2f(p[j][e] * scale_log2 - lr[e >> 1]) : 0.f;
        p[j][e] = pe * (dp[j][e] - dr[e >> 1]);
      }
    product_nn<D>(acc, p, ks);
    __syncthreads();
  }
  const float one[2] = {1.f, 1.f};
  store_rows<D>(dq + qoff, acc, row0, lq, c, scale, one);
}

template <int D>
__device__ void flash_bwd_dkdv(const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                               const bf16 *__restrict__ dout, const float *__restrict__ lse,
                               const float *__restrict__ delta, bf16 *__restrict__ dk, bf16 *__restrict__ dv, int lq,
                               int lk, int heads, float scale_log2, float scale) {
  using G = Dims<D>;
  __shared__ __align__(16) bf16 qs[ROWS][G::STRIDE];
  __shared__ __align__(16) bf16 ds[ROWS][G::STRIDE];
  __shared__ float ls[ROWS], dl[ROWS];
  const int bh = blockIdx.y, b = bh / heads, h = bh % heads, c = heads * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
  const int k0 = blockIdx.x * ROWS, row0 = k0 + warp * 16;
  const size_t qoff = (size_t)b * lq * c + h * D, koff = (size_t)b * lk * c + h * D;

  uint32_t ka[G::KC][4], va[G::KC][4];
  load_tile<D>(qs, k + koff, k0, lk, c);
  load_tile<D>(ds, v + koff, k0, lk, c);
  __syncthreads();
  load_a<D>(ka, qs, warp * 16);
  load_a<D>(va, ds, warp * 16);
  __syncthreads();
  float dka[G::NT][4], dva[G::NT][4];
#pragma unroll
  for (int nt = 0; nt < G::NT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) dka[nt][e] = dva[nt][e] = 0.f;

  for (int q0 = 0; q0 < lq; q0 += ROWS) {
    load_tile<D>(qs, q + qoff, q0, lq, c);
    load_tile<D>(ds, dout + qoff, q0, lq, c);
    for (int i = threadIdx.x; i < ROWS; i += THREADS) {
      const bool in = q0 + i < lq;
      // Past the last query row: probability 0 (exp2(-inf)), so nothing flows into dK, dV.
      ls[i] = in ? lse[(size_t)bh * lq + q0 + i] : INFINITY;
      dl[i] = in ? delta[(size_t)bh * lq + q0 + i] : 0.f;
    }
    __syncthreads();
    float p[8][4], dp[8][4];
    product_nt<D>(p, ka, qs);  // Sᵀ: rows are keys, columns queries
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) p[j][e] = exp2f(p[j][e] * scale_log2 - ls[j * 8 + 2 * t + (e & 1)]);
    product_nn<D>(dva, p, ds);
    product_nt<D>(dp, va, ds);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) p[j][e] *= dp[j][e] - dl[j * 8 + 2 * t + (e & 1)];
    product_nn<D>(dka, p, qs);
    __syncthreads();
  }
  const float one[2] = {1.f, 1.f};
  store_rows<D>(dk + koff, dka, row0, lk, c, scale, one);
  store_rows<D>(dv + koff, dva, row0, lk, c, 1.f, one);
}

}  // namespace

// δ = rowsum(dO ⊙ O) per (batch·head, row), one thread each; layout [batch·heads, len].
extern "C" __global__ void flash_delta(const bf16 *__restrict__ o, const bf16 *__restrict__ dout,
                                       float *__restrict__ delta, int len, int heads, int d, uint64_t total) {
  const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const uint64_t bh = i / len, row = i % len, b = bh / heads, h = bh % heads;
  const size_t base = (b * len + row) * (size_t)heads * d + h * d;
  float s = 0.f;
  for (int j = 0; j < d; j += 2) {
    const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(o + base + j));
    const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dout + base + j));
    s += x.x * y.x + x.y * y.y;
  }
  delta[i] = s;
}

#define FLASH(D)                                                                                                     \
  extern "C" __global__ void __launch_bounds__(THREADS) flash_fwd_##D(                                              \
      const bf16 *q, const bf16 *k, const bf16 *v, bf16 *o, float *lse, int lq, int lk, int heads, float sl2) {    \
    flash_fwd<D>(q, k, v, o, lse, lq, lk, heads, sl2);                                                               \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(THREADS) flash_bwd_dq_##D(                                           \
      const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse, const float *delta,          \
      bf16 *dq, int lq, int lk, int heads, float sl2, float scale) {                                                 \
    flash_bwd_dq<D>(q, k, v, dout, lse, delta, dq, lq, lk, heads, sl2, scale);                                       \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(THREADS) flash_bwd_dkdv_##D(                                         \
      const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout, const float *lse, const float *delta,          \
      bf16 *dk, bf16 *dv, int lq, int lk, int heads, float sl2, float scale) {                                       \
    flash_bwd_dkdv<D>(q, k, v, dout, lse, delta, dk, dv, lq, lk, heads, sl2, scale);                                 \
  }

FLASH(40)
FLASH(64)
FLASH(80)
FLASH(160)
