// factgpt's fused CPU kernels for training: attention that pays only for the live entries of packed
// rows (block-diagonal per document and causal), its dropout drawn where it is used, and a dropout
// whose mask is never stored. Registered as torch ops (torch.ops.factgpt.*); the autograd and the
// build on first use live in factgpt/kernels/__init__.py.
//
// Dropout bits come from Philox4x32-10, a counter-based generator (the one CUDA's fused attention
// uses), keyed by a 64-bit seed drawn from torch's generator at each call (struct Dropping says which
// word each element takes: 16 Philox blocks give the masks of 64 consecutive elements, 16 a vector).
// The backward regenerates the mask from the same seed instead of storing it, runs repeat from
// their seed, and resume points hold torch's generator.
// An element is kept when its 32-bit word is below round(keep * 2^32): exact to 2^-32.
//
// Attention computes in fp32 whatever its inputs (fp32, or bf16 under autocast), one (row, head) a
// task. Inputs are (R, T, H, D): the linear layers' outputs viewed by heads, no transposes. A row of
// a packed batch is cut into segments, the runs of equal document ids; query i of a segment sees its
// keys 0..i (top-left causal, so a cross-attention with Tq != Tk is one segment of the whole row).
// Keys go 16 at a time through GCC's vector types: AVX512 where the processor has it, pairs of AVX2
// instructions where it has not (the build is for the processor it runs on).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int L = 16;  // lanes of a vector: keys handled at once
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));

inline vf splat(float x) { return vf{} + x; }
inline vf load16(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store16(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline float hsum(vf v) { float s = 0; for (int l = 0; l < L; ++l) s += v[l]; return s; }
inline float hmax(vf v) { float m = v[0]; for (int l = 1; l < L; ++l) m = std::max(m, v[l]); return m; }
inline vf fill_from(vf v, int64_t n, float fill) {  // v with lanes n.. set to fill (whatever they held)
  const vi idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return idx < vi{} + int32_t(n) ? v : splat(fill);
}

// e^x for x <= 0 (Cephes' expf polynomial), 16 lanes
inline vf exp_nonpositive(vf x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const vi n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi);  // nearest, x <= 0
  const vf nf = __builtin_convertvector(n, vf);
  const vf r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (vf)((n + 127) << 23);
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al. 2011), 16 counters at a time

// (hi, lo) of the 64-bit products x * m, lane by lane
inline void mulhilo(vu x, uint32_t m, vu& hi, vu& lo) {
#if defined(__AVX512F__)
  __m512i a, mv = _mm512_set1_epi32(int(m));
  std::memcpy(&a, &x, sizeof a);
  const __m512i even = _mm512_mul_epu32(a, mv), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), mv);
  const __m512i h = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  std::memcpy(&hi, &h, sizeof hi);
  lo = x * m;
#elif defined(__AVX2__)
  for (int half = 0; half < 2; ++half) {
    __m256i a, mv = _mm256_set1_epi32(int(m));
    std::memcpy(&a, reinterpret_cast<const char*>(&x) + 32 * half, sizeof a);
    const __m256i even = _mm256_mul_epu32(a, mv), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mv);
    const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    std::memcpy(reinterpret_cast<char*>(&hi) + 32 * half, &h, sizeof h);
  }
  lo = x * m;
#else
  for (int l = 0; l < L; ++l) {
    const uint64_t p = uint64_t(x[l]) * m;
    hi[l] = uint32_t(p >> 32);
    lo[l] = uint32_t(p);
  }
#endif
}

// The keep masks of 64 consecutive elements, 16 a vector: Philox blocks `first` .. first + 15 in
// the lanes, and word w of lane l is element 16 w + l. An element is kept when its word is below
// the threshold; kept lanes hold 1 / keep, the others 0.
inline void keep64(uint64_t first, uint64_t seed, uint32_t threshold, float inv_keep, vf out[4]) {
  vu x0, x1, x2 = vu{}, x3 = vu{};
  for (int l = 0; l < L; ++l) {
    const uint64_t c = first + uint64_t(l);
    x0[l] = uint32_t(c);
    x1[l] = uint32_t(c >> 32);
  }
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    vu hi0, lo0, hi2, lo2;
    mulhilo(x0, 0xD2511F53u, hi0, lo0);
    mulhilo(x2, 0xCD9E8D57u, hi2, lo2);
    const vu y0 = hi2 ^ x1 ^ k0, y2 = hi0 ^ x3 ^ k1;
    x1 = lo2;
    x3 = lo0;
    x0 = y0;
    x2 = y2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const vu words[4] = {x0, x1, x2, x3};
  for (int w = 0; w < 4; ++w) out[w] = words[w] < threshold ? splat(inv_keep) : vf{};
}

inline uint32_t keep_threshold(double keep) {
  const double t = std::round(keep * 4294967296.0);
  return t >= 4294967295.0 ? 4294967295u : uint32_t(t);
}

// A call's dropout. Its elements come in streams (the weights of one query, its keys counted from its
// segment's first; or a whole tensor, one stream): element e of stream s, of `chunks` chunks of 64,
// is word (e % 64) / 16 of Philox block 16 (s chunks + e / 64) + e % 16, keyed by the call's seed.
struct Dropping {
  bool on;
  uint32_t threshold;
  float inv_keep;
  uint64_t seed;

  Dropping(double p, int64_t seed_) : on(p > 0), threshold(keep_threshold(1.0 - p)),
      inv_keep(p > 0 ? float(1.0 / (1.0 - p)) : 1.0f), seed(uint64_t(seed_)) {}

  // mask / keep of elements [0, n) of stream `stream` (chunks of 64: `chunks` a stream), into kept
  void fill(uint64_t stream, uint64_t chunks, int64_t n, float* kept) const {
    for (int64_t c = 0; c * 64 < n; ++c) {
      vf out[4];
      keep64(16 * (stream * chunks + uint64_t(c)), seed, threshold, inv_keep, out);
      for (int w = 0; w < 4; ++w) store16(kept + 64 * c + 16 * w, out[w]);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// attention

struct Shape {
  int64_t R, tq, tk, H, d;
  int64_t stride() const { return H * d; }  // between positions of a (R, T, H, D) tensor
  int64_t tk16() const { return (tk + L - 1) / L * L; }  // keys padded to whole vectors
  int64_t tk64() const { return (tk + 63) / 64 * 64; }  // and to whole dropout chunks
  // the dropout stream of query qi of head h in row r: its keys from its segment's first
  uint64_t stream(int64_t r, int64_t h, int64_t qi) const { return uint64_t((r * H + h) * tq + qi); }
  uint64_t chunks() const { return uint64_t(tk64() / 64); }
};

struct Segment {
  int64_t q0, k0, lq, lk;
};

// The segments of a row: runs of equal document ids (self-attention), or the one segment [0, Tq) x [0, Tk)
void segments_of(const int64_t* docs, const Shape& s, std::vector<Segment>& out) {
  out.clear();
  if (docs == nullptr) {
    out.push_back({0, 0, s.tq, s.tk});
    return;
  }
  int64_t start = 0;
  for (int64_t i = 1; i <= s.tq; ++i) {
    if (i == s.tq || docs[i] != docs[start]) {
      out.push_back({start, start, i - start, i - start});
      start = i;
    }
  }
}

// A task's buffers, kept per thread between tasks and calls
struct Workspace {
  std::vector<float> f;
  std::vector<Segment> segments;

  float* floats(size_t n) {
    if (f.size() < n) f.resize(n);
    return f.data();
  }
};

thread_local Workspace workspace;

// rows [0, t) of head h in row r of a (R, T, H, D) tensor as fp32: (t, D), or transposed (D, t16)
template <int D, typename T>
void load(const T* x, const Shape& s, int64_t t, int64_t r, int64_t h, float* dst) {
  const T* base = x + (r * t * s.H + h) * D;
  for (int64_t i = 0; i < t; ++i)
    for (int e = 0; e < D; ++e) dst[i * D + e] = float(base[i * s.stride() + e]);
}

template <int D, typename T>
void load_transposed(const T* x, const Shape& s, int64_t r, int64_t h, float* dst) {
  const int64_t t16 = s.tk16();
  const T* base = x + (r * s.tk * s.H + h) * D;
  for (int e = 0; e < D; ++e)
    for (int64_t i = s.tk; i < t16; ++i) dst[e * t16 + i] = 0.0f;
  for (int64_t i = 0; i < s.tk; ++i)
    for (int e = 0; e < D; ++e) dst[e * t16 + i] = float(base[i * s.stride() + e]);
}

template <int D, typename T>
void store(const float* src, const Shape& s, int64_t t, int64_t r, int64_t h, T* x) {
  T* base = x + (r * t * s.H + h) * D;
  for (int64_t i = 0; i < t; ++i)
    for (int e = 0; e < D; ++e) base[i * s.stride() + e] = T(src[i * D + e]);
}

// Queries go QB at a time through the micro-kernels below, so that every key loaded serves QB of
// them; keys go 16 a vector.
constexpr int QB = 4;

// S[a][j] = scale * x_{i0+a} . y_{k0+j} for a < QB (rows of x past the segment are never read
// back) and j < n, from x (rows of D) and y transposed (D, t16)
template <int D>
inline void scores_block(const float* x, int64_t i0, int64_t nq, const float* yt, int64_t t16, int64_t k0, int64_t n,
                         float scale, float* S /* QB x t16 */) {
  for (int64_t j = 0; j < n; j += L) {
    vf acc[QB] = {};
    for (int e = 0; e < D; ++e) {
      const vf kv = load16(yt + e * t16 + k0 + j);
      for (int a = 0; a < QB; ++a)
        if (a < nq) acc[a] += x[(i0 + a) * D + e] * kv;
    }
    for (int a = 0; a < QB; ++a) store16(S + a * t16 + j, acc[a] * scale);
  }
}

// y += a x over D floats, in whole vectors where D allows
template <int D>
inline void axpy(float a, const float* x, float* y) {
  if constexpr (D % L == 0) {
    for (int c = 0; c < D; c += L) store16(y + c, load16(y + c) + a * load16(x + c));
  } else {
    for (int e = 0; e < D; ++e) y[e] += a * x[e];
  }
}

// out[a] = sum_j W[a][j] rows_{k0+j} for a < nq, j < n (W: QB x t16, zero past each row's keys)
template <int D>
inline void weighted_rows(const float* W, int64_t t16, int64_t nq, const float* rows, int64_t k0, int64_t n,
                          float* out /* nq rows of D */) {
  if constexpr (D % L == 0) {
    vf acc[QB][D / L] = {};
    for (int64_t j = 0; j < n; ++j) {
      vf row[D / L];
      for (int c = 0; c < D / L; ++c) row[c] = load16(rows + (k0 + j) * D + c * L);
      for (int a = 0; a < QB; ++a)
        if (a < nq)
          for (int c = 0; c < D / L; ++c) acc[a][c] += W[a * t16 + j] * row[c];
    }
    for (int a = 0; a < nq; ++a)
      for (int c = 0; c < D / L; ++c) store16(out + a * D + c * L, acc[a][c]);
  } else {
    std::fill(out, out + nq * D, 0.0f);
    for (int a = 0; a < nq; ++a)
      for (int64_t j = 0; j < n; ++j) axpy<D>(W[a * t16 + j], rows + (k0 + j) * D, out + a * D);
  }
}

// gk_j = sum_{i >= j} DS[i][j] q_i and gv_j = sum_{i >= j} PK[i][j] go_i for keys j < lk of a segment
// (rows i < lq of DS and PK hold the keys each query sees; entries past them are not read), QB keys
// at a time so that every query row loaded serves QB of them
template <int D>
void key_sums(const float* DS, const float* PK, int64_t t16, const float* q, const float* go, int64_t lq, int64_t lk,
              float* gk, float* gv) {
  for (int64_t j0 = 0; j0 < lk; j0 += QB) {
    const int64_t nk = std::min<int64_t>(QB, lk - j0);
    if constexpr (D % L == 0) {
      vf acc_k[QB][D / L] = {}, acc_v[QB][D / L] = {};
      for (int64_t i = j0; i < lq; ++i) {
        vf qi[D / L], gi[D / L];
        for (int c = 0; c < D / L; ++c) {
          qi[c] = load16(q + i * D + c * L);
          gi[c] = load16(go + i * D + c * L);
        }
        for (int b = 0; b < QB; ++b) {
          if (b >= nk || j0 + b > i) continue;  // key j0 + b is seen from query j0 + b on
          const float ds = DS[i * t16 + j0 + b], pk = PK[i * t16 + j0 + b];
          for (int c = 0; c < D / L; ++c) {
            acc_k[b][c] += ds * qi[c];
            acc_v[b][c] += pk * gi[c];
          }
        }
      }
      for (int b = 0; b < nk; ++b)
        for (int c = 0; c < D / L; ++c) {
          store16(gk + (j0 + b) * D + c * L, acc_k[b][c]);
          store16(gv + (j0 + b) * D + c * L, acc_v[b][c]);
        }
    } else {
      for (int64_t j = j0; j < j0 + nk; ++j) {
        std::fill(gk + j * D, gk + (j + 1) * D, 0.0f);
        std::fill(gv + j * D, gv + (j + 1) * D, 0.0f);
        for (int64_t i = j; i < lq; ++i) {
          axpy<D>(DS[i * t16 + j], q + i * D, gk + j * D);
          axpy<D>(PK[i * t16 + j], go + i * D, gv + j * D);
        }
      }
    }
  }
}

// the softmax of scores w[0..n) in place, lanes from n zeroed; its log-sum-exp into *lse_out; or
// (lse given) exp(w - lse), the probabilities the forward had
inline float softmax_in_place(float* w, int64_t n, float* lse_out, float lse = NAN) {
  float mx = lse;
  if (std::isnan(lse)) {
    vf m = splat(-INFINITY);
    for (int64_t j = 0; j < n; j += L) {
      const vf v = fill_from(load16(w + j), n - j, -INFINITY);
      m = v > m ? v : m;
    }
    mx = hmax(m);
  }
  vf sum = vf{};
  for (int64_t j = 0; j < n; j += L) {
    // past n the scores are whatever followed them in memory: zeroed, never multiplied
    const vf e = fill_from(exp_nonpositive(load16(w + j) - mx), n - j, 0.0f);
    store16(w + j, e);
    sum += e;
  }
  const float total = hsum(sum);
  if (lse_out != nullptr) *lse_out = mx + std::log(total);
  return total;
}

template <int D, typename T>
void forward_task(const T* q, const T* k, const T* v, T* o, float* lse, const int64_t* docs, const Shape& s,
                  int64_t r, int64_t h, float scale, const Dropping& drop) {
  const int64_t t16 = s.tk16();
  Workspace& ws = workspace;
  float* Q = ws.floats(s.tq * D * 2 + s.tk * D + D * t16 + QB * t16 + s.tk64());
  float *O = Q + s.tq * D, *V = O + s.tq * D, *Kt = V + s.tk * D, *W = Kt + D * t16, *kept = W + QB * t16;
  load<D>(q, s, s.tq, r, h, Q);
  load<D>(v, s, s.tk, r, h, V);
  load_transposed<D>(k, s, r, h, Kt);
  float* lse_row = lse + (r * s.H + h) * s.tq;
  segments_of(docs, s, ws.segments);
  for (const Segment& g : ws.segments) {
    for (int64_t i0 = 0; i0 < g.lq; i0 += QB) {
      const int64_t nq = std::min<int64_t>(QB, g.lq - i0), n_all = std::min(i0 + nq, g.lk);
      scores_block<D>(Q, g.q0 + i0, nq, Kt, t16, g.k0, n_all, scale, W);
      for (int64_t a = 0; a < nq; ++a) {
        const int64_t qi = g.q0 + i0 + a, n = std::min(i0 + a + 1, g.lk);
        float* w = W + a * t16;
        const float norm = 1.0f / softmax_in_place(w, n, lse_row + qi);
        if (drop.on) {
          drop.fill(s.stream(r, h, qi), s.chunks(), n, kept);
          for (int64_t j = 0; j < n; j += L) store16(w + j, load16(w + j) * norm * load16(kept + j));
        } else {
          for (int64_t j = 0; j < n; j += L) store16(w + j, load16(w + j) * norm);
        }
        std::fill(w + n, w + n_all, 0.0f);  // keys this query does not see, within the block's
      }
      weighted_rows<D>(W, t16, nq, V, g.k0, n_all, O + (g.q0 + i0) * D);
    }
  }
  store<D>(O, s, s.tq, r, h, o);
}

template <int D, typename T>
void backward_task(const T* go, const T* q, const T* k, const T* v, const T* o, const float* lse, T* gq, T* gk,
                   T* gv, const int64_t* docs, const Shape& s, int64_t r, int64_t h, float scale,
                   const Dropping& drop) {
  const int64_t t16 = s.tk16(), tq4 = (s.tq + QB - 1) / QB * QB;
  Workspace& ws = workspace;
  float* Q = ws.floats(s.tq * D * 3 + s.tk * D * 3 + D * t16 * 2 + 2 * tq4 * t16 + 2 * QB * t16 + s.tk64() + s.tq);
  float *GO = Q + s.tq * D, *GQ = GO + s.tq * D, *K = GQ + s.tq * D, *GK = K + s.tk * D, *GV = GK + s.tk * D;
  float *Kt = GV + s.tk * D, *Vt = Kt + D * t16;
  float *PK = Vt + D * t16, *DS = PK + tq4 * t16;  // the segment's P mask / keep and dS, a row a query
  float *P = DS + tq4 * t16, *G = P + QB * t16, *kept = G + QB * t16, *delta = kept + s.tk64();
  load<D>(q, s, s.tq, r, h, Q);
  load<D>(go, s, s.tq, r, h, GO);
  load<D>(k, s, s.tk, r, h, K);
  load_transposed<D>(k, s, r, h, Kt);
  load_transposed<D>(v, s, r, h, Vt);
  {  // delta_i = dO_i . O_i = sum_j P_ij (mask_ij / keep) dP_ij: O is read once, row by row
    const T* obase = o + (r * s.tq * s.H + h) * D;
    for (int64_t i = 0; i < s.tq; ++i) {
      float acc = 0.0f;
      for (int e = 0; e < D; ++e) acc += GO[i * D + e] * float(obase[i * s.stride() + e]);
      delta[i] = acc;
    }
  }
  const float* lse_row = lse + (r * s.H + h) * s.tq;
  segments_of(docs, s, ws.segments);
  for (const Segment& g : ws.segments) {
    // 1. P (as the forward had it), dP = dO V^T, the mask: PK = P mask / keep, DS = P (mask dP - delta) scale
    for (int64_t i0 = 0; i0 < g.lq; i0 += QB) {
      const int64_t nq = std::min<int64_t>(QB, g.lq - i0), n_all = std::min(i0 + nq, g.lk);
      scores_block<D>(Q, g.q0 + i0, nq, Kt, t16, g.k0, n_all, scale, P);
      scores_block<D>(GO, g.q0 + i0, nq, Vt, t16, g.k0, n_all, 1.0f, G);
      for (int64_t a = 0; a < nq; ++a) {
        const int64_t qi = g.q0 + i0 + a, n = std::min(i0 + a + 1, g.lk);
        float *p = P + a * t16, *gr = G + a * t16, *pk = PK + (i0 + a) * t16, *ds = DS + (i0 + a) * t16;
        softmax_in_place(p, n, nullptr, lse_row[qi]);
        if (drop.on) {
          drop.fill(s.stream(r, h, qi), s.chunks(), n, kept);
        } else {
          std::fill(kept, kept + (n + L - 1) / L * L, 1.0f);
        }
        const vf di = splat(delta[qi]);
        for (int64_t j = 0; j < n; j += L) {
          const vf pj = load16(p + j), kj = load16(kept + j);
          store16(pk + j, pj * kj);
          store16(ds + j, pj * (kj * load16(gr + j) - di) * scale);
        }
        std::fill(pk + n, pk + n_all, 0.0f);
        std::fill(ds + n, ds + n_all, 0.0f);
      }
      // 2. dQ_i = sum_j dS_ij k_j
      weighted_rows<D>(DS + i0 * t16, t16, nq, K, g.k0, n_all, GQ + (g.q0 + i0) * D);
    }
    // 3. dK_j = sum_i dS_ij q_i and dV_j = sum_i PK_ij dO_i over the queries i >= j that see key j
    key_sums<D>(DS, PK, t16, Q + g.q0 * D, GO + g.q0 * D, g.lq, g.lk, GK + g.k0 * D, GV + g.k0 * D);
  }
  store<D>(GQ, s, s.tq, r, h, gq);
  store<D>(GK, s, s.tk, r, h, gk);
  store<D>(GV, s, s.tk, r, h, gv);
}

Shape check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& docs) {
  TORCH_CHECK(q.device().is_cpu() && q.dim() == 4 && q.is_contiguous(), "q: a contiguous (R, T, H, D) CPU tensor");
  TORCH_CHECK(k.sizes() == v.sizes() && k.is_contiguous() && v.is_contiguous(), "k, v: contiguous (R, Tk, H, D)");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3), "q, k: other shapes");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "q, k, v: one dtype");
  if (docs.has_value()) {
    TORCH_CHECK(q.size(1) == k.size(1), "documents: self-attention only");
    TORCH_CHECK(docs->scalar_type() == at::kLong && docs->is_contiguous() &&
                docs->sizes() == at::IntArrayRef({q.size(0), q.size(1)}), "documents: (R, T) int64");
  }
  return Shape{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
}

// f.template operator()<D>() for the head sizes compiled in
template <typename F>
void with_head_size(int64_t d, F&& f) {
  switch (d) {
    case 8: f.template operator()<8>(); break;
    case 16: f.template operator()<16>(); break;
    case 32: f.template operator()<32>(); break;
    case 64: f.template operator()<64>(); break;
    case 128: f.template operator()<128>(); break;
    default: TORCH_CHECK(false, "head size ", d, ": the fused attention takes 8, 16, 32, 64 or 128");
  }
}

bool supports_head_size(int64_t d) { return d == 8 || d == 16 || d == 32 || d == 64 || d == 128; }

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const c10::optional<at::Tensor>& documents, double scale,
                                                     double p, int64_t seed) {
  const Shape s = check(q, k, v, documents);
  auto o = at::empty_like(q);
  auto lse = at::empty({s.R, s.H, s.tq}, q.options().dtype(at::kFloat));
  const Dropping drop(p, seed);
  const int64_t* docs = documents.has_value() ? documents->data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "attention_forward", [&] {
    with_head_size(s.d, [&]<int D>() {
      at::parallel_for(0, s.R * s.H, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t r = task / s.H, h = task % s.H;
          forward_task<D>(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                          o.data_ptr<scalar_t>(), lse.data_ptr<float>(), docs ? docs + r * s.tq : nullptr, s, r, h,
                          float(scale), drop);
        }
      });
    });
  });
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_o, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& o,
    const at::Tensor& lse, const c10::optional<at::Tensor>& documents, double scale, double p, int64_t seed) {
  const Shape s = check(q, k, v, documents);
  const at::Tensor go = grad_o.to(q.scalar_type()).contiguous();
  TORCH_CHECK(go.sizes() == q.sizes() && o.sizes() == q.sizes(), "grad_o, o: the shape of q");
  auto gq = at::empty_like(q), gk = at::empty_like(k), gv = at::empty_like(v);
  const Dropping drop(p, seed);
  const int64_t* docs = documents.has_value() ? documents->data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "attention_backward", [&] {
    with_head_size(s.d, [&]<int D>() {
      at::parallel_for(0, s.R * s.H, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t r = task / s.H, h = task % s.H;
          backward_task<D>(go.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                           v.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), lse.data_ptr<float>(),
                           gq.data_ptr<scalar_t>(), gk.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>(),
                           docs ? docs + r * s.tq : nullptr, s, r, h, float(scale), drop);
        }
      });
    });
  });
  return {gq, gk, gv};
}

// ---------------------------------------------------------------------------------------------
// dropout: y = x * mask / keep, the mask from Philox (element n: word n of the stream)

// y = x * m over 16 elements, in vector instructions for fp32 and bf16 (rounded to nearest even, as
// c10::BFloat16 rounds; x * m is finite where x is, so no NaN arises that the rounding would have to keep)
inline void scale16(const float* x, vf m, float* y) { store16(y, load16(x) * m); }

inline void scale16(const c10::BFloat16* x, vf m, c10::BFloat16* y) {
  typedef uint16_t vh __attribute__((vector_size(32)));
  vh h;
  std::memcpy(&h, x, sizeof h);
  const vu bits = __builtin_convertvector(h, vu) << 16;
  const vf v = (vf)bits * m;
  const vu out = ((vu)v + (((vu)v >> 16) & 1u) + 0x7FFFu) >> 16;
  const vh r = __builtin_convertvector(out, vh);
  std::memcpy(y, &r, sizeof r);
}

template <typename T>
inline void scale16(const T* x, vf m, T* y) {  // other types: one element at a time
  for (int l = 0; l < L; ++l) y[l] = T(float(x[l]) * m[l]);
}

at::Tensor dropout(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu() && p > 0 && p < 1, "dropout: a CPU tensor and 0 < p < 1");
  const at::Tensor xc = x.contiguous();
  auto y = at::empty_like(xc);
  const Dropping drop(p, seed);
  const int64_t numel = xc.numel(), chunks = (numel + 63) / 64;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, xc.scalar_type(), "dropout", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    // element e: chunk e / 64 of the one stream, so that any cut of the work draws the same mask
    at::parallel_for(0, chunks, 64, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        vf out[4];
        keep64(16 * uint64_t(c), drop.seed, drop.threshold, drop.inv_keep, out);
        const int64_t e0 = 64 * c, n = std::min<int64_t>(64, numel - e0);
        if (n == 64) {
          for (int w = 0; w < 4; ++w) scale16(xp + e0 + 16 * w, out[w], yp + e0 + 16 * w);
        } else {
          for (int64_t t = 0; t < n; ++t) yp[e0 + t] = scalar_t(float(xp[e0 + t]) * out[t / L][t % L]);
        }
      }
    });
  });
  return y;
}

bool head_size_supported(int64_t d) { return supports_head_size(d); }

}  // namespace

TORCH_LIBRARY(factgpt, m) {
  m.def("attention_forward(Tensor q, Tensor k, Tensor v, Tensor? documents, float scale, float p, int seed)"
        " -> (Tensor, Tensor)");
  m.def("attention_backward(Tensor grad_o, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor? documents,"
        " float scale, float p, int seed) -> (Tensor, Tensor, Tensor)");
  m.def("dropout(Tensor x, float p, int seed) -> Tensor");
  m.def("head_size_supported(int d) -> bool", &head_size_supported);
}

TORCH_LIBRARY_IMPL(factgpt, CPU, m) {
  m.impl("attention_forward", &attention_forward);
  m.impl("attention_backward", &attention_backward);
  m.impl("dropout", &dropout);
}
