// y[M, N] = x[M, K] @ w for few rows M (a decode step: the batch, or batch x beams), as an XLA FFI
// custom call on the CPU. w comes packed as panels [P, K, 8] (panel p holds columns 8p..8p+7, zero
// past N), so that a panel is one contiguous 16 KB stream (K = 512).
//
// Why by hand: at 8 rows a product does 4 FLOP per weight byte, so it is bound by how fast the
// weights stream in. XLA's CPU dots (Eigen; YNNPACK, XNNPACK and oneDNN were also measured) read
// them at ~10 GB/s on the 2-core VM this was tuned on; this reads them at 18-26 GB/s (the machine
// streams ~30): each step of the k loop loads one row of the panel, broadcasts the 8 rows' x values
// and keeps 8 accumulators in registers, and prefetches the panel 4 KB ahead. Wider panels
// (16 or 24 columns, 4 rows at a time) measured no faster; 8 x 16 accumulators spill.
//
// Built on first use by mesh_t5.native (AVX2 and FMA, checked there); rows are split into blocks
// of 8 and the panels into chunks that XLA's intra-op thread pool and the calling thread share.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kCols = 8;           // columns per panel: one AVX register
constexpr int kPrefetch = 1024;    // floats ahead of the panel row being read (4 KB)
constexpr int kChunksPerThread = 4;

// MR rows of x (row stride K) times one panel, into MR rows of y (row stride ldy), ncols <= 8 of them.
template <int MR>
inline void Block(const float* x, int64_t K, const float* panel, float* y, int64_t ldy, int ncols) {
  __m256 acc[MR];
  for (int m = 0; m < MR; m++) acc[m] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    const float* row = panel + k * kCols;
    _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetch), _MM_HINT_T0);
    const __m256 w = _mm256_loadu_ps(row);
    for (int m = 0; m < MR; m++) acc[m] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + m * K + k), w, acc[m]);
  }
  // A masked store for the last panel's columns: copying out through a buffer would take the
  // accumulators' address, and GCC then spills them to the stack on every step of the k loop.
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int m = 0; m < MR; m++) _mm256_maskstore_ps(y + m * ldy, keep, acc[m]);
}

void Rows(int64_t rows, const float* x, int64_t K, const float* panel, float* y, int64_t ldy, int ncols) {
  switch (rows) {
    case 1: return Block<1>(x, K, panel, y, ldy, ncols);
    case 2: return Block<2>(x, K, panel, y, ldy, ncols);
    case 3: return Block<3>(x, K, panel, y, ldy, ncols);
    case 4: return Block<4>(x, K, panel, y, ldy, ncols);
    case 5: return Block<5>(x, K, panel, y, ldy, ncols);
    case 6: return Block<6>(x, K, panel, y, ldy, ncols);
    case 7: return Block<7>(x, K, panel, y, ldy, ncols);
    default: return Block<8>(x, K, panel, y, ldy, ncols);
  }
}

// Panels [p0, p1) for all M rows.
void Panels(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; p++) {
    const float* panel = w + p * K * kCols;
    const int ncols = static_cast<int>(std::min<int64_t>(kCols, N - p * kCols));
    for (int64_t m = 0; m < M; m += 8) {
      Rows(std::min<int64_t>(8, M - m), x + m * K, K, panel, y + m * N + p * kCols, N, ncols);
    }
  }
}

// Chunks of panels handed out to whichever thread asks next; shared_ptr-owned, so a pool task that
// starts after the work is done finds nothing left and touches nothing freed.
struct Work {
  const float* x;
  const float* w;
  float* y;
  int64_t M, K, N, panels, chunk, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Run() {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      Panels(x, M, K, w, N, y, c * chunk, std::min(panels, (c + 1) * chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error FewRowsMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                         ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || yd.size() != 2 || wd[2] != kCols || wd[1] != xd[1] ||
      yd[0] != xd[0] || (yd[1] + kCols - 1) / kCols != wd[0]) {
    return ffi::Error::InvalidArgument("few_rows_matmul: expected x [M, K], w [ceil(N/8), K, 8], y [M, N]");
  }
  auto work = std::make_shared<Work>();
  work->x = x.typed_data();
  work->w = w.typed_data();
  work->y = y->typed_data();
  work->M = xd[0];
  work->K = xd[1];
  work->N = yd[1];
  work->panels = wd[0];
  if (work->M == 0 || work->panels == 0) return ffi::Error::Success();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->chunk = std::max<int64_t>(1, (work->panels + threads * kChunksPerThread - 1) / (threads * kChunksPerThread));
  work->chunks = (work->panels + work->chunk - 1) / work->chunk;
  for (int64_t t = 1; t < std::min(threads, work->chunks); t++) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load(std::memory_order_acquire) < work->chunks) _mm_pause();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MeshT5FewRowsMatmul, FewRowsMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
