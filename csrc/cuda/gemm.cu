// Row-major GEMM with fused epilogues on cuBLASLt: C (m x n) = epilogue(op(A) op(B)).
//
// cuBLASLt is column-major. A row-major matrix with leading dimension ld is the column-major
// view of its transpose, so C^T = op(B)^T op(A)^T is computed instead: cuBLASLt's "A" is our
// B (with our trans_b), its "B" our A (with our trans_a), its D our C viewed as an n x m
// column-major matrix. A row-broadcast bias of C (n entries) is then a per-row vector of D,
// which is what CUBLASLT_EPILOGUE_BIAS adds; column sums of C are row sums of D (DRELU_BGRAD,
// DGELU_BGRAD); column sums of our op(B) over k are cuBLASLt's BGRADA.
//
// float32 runs in CUBLAS_COMPUTE_32F (TF32 only when allowed), float64 in CUBLAS_COMPUTE_64F.
// Cost: 2 m n k flops; each operand read once.
//
// One cuBLASLt handle per device and one workspace per (device, stream) are created on first
// use and kept for the process; heuristic results are cached by shape, epilogue and pointer
// alignment. A first call outside CUDA graph capture warms these caches; during capture no
// workspace is allocated (cuBLASLt then picks an algorithm that needs none).
#include <cublasLt.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/gemm.h"

namespace fm::cuda {
namespace {

// 32 MiB: cuBLASLt's recommended workspace on Hopper (enough for every algorithm it ranks).
constexpr std::size_t kWorkspaceBytes = std::size_t(32) << 20;
// Streams that get their own workspace; further streams run without one.
constexpr std::size_t kMaxWorkspaceStreams = 16;

std::atomic<bool> g_allow_tf32{false};

void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(detail::concat(what, " failed: ", cublasLtGetStatusString(s), " (status ",
                                   static_cast<int>(s), ") at ", file, ":", line));
}
#define FM_CUBLAS_CHECK(expr) check_cublas((expr), #expr, __FILE__, __LINE__)

// The process-wide caches: handles, workspaces and heuristic results.
struct AlgoKey {
  int device;
  int dtype;  // sizeof(T)
  bool tf32, trans_a, trans_b;
  index_t m, n, k, lda, ldb, ldc, aux_ld;
  int epilogue;
  bool has_bias, has_aux;
  int align_a, align_b, align_c, align_bias, align_aux;
  std::size_t workspace;
  bool operator<(const AlgoKey& o) const {
    return std::tie(device, dtype, tf32, trans_a, trans_b, m, n, k, lda, ldb, ldc, aux_ld, epilogue,
                    has_bias, has_aux, align_a, align_b, align_c, align_bias, align_aux,
                    workspace) < std::tie(o.device, o.dtype, o.tf32, o.trans_a, o.trans_b, o.m, o.n,
                                          o.k, o.lda, o.ldb, o.ldc, o.aux_ld, o.epilogue,
                                          o.has_bias, o.has_aux, o.align_a, o.align_b, o.align_c,
                                          o.align_bias, o.align_aux, o.workspace);
  }
};

struct AlgoEntry {
  bool supported;
  cublasLtMatmulAlgo_t algo;
};

struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;
  std::map<AlgoKey, AlgoEntry> algos;
};

LtState& state() {
  static LtState* s = new LtState();  // never destroyed: may be used until interpreter exit
  return *s;
}

cublasLtHandle_t handle_for(int device) {
  LtState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.handles.find(device);
  if (it != s.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  FM_CUBLAS_CHECK(cublasLtCreate(&h));
  s.handles.emplace(device, h);
  return h;
}

// The workspace of (device, stream), or null (size 0) during graph capture before one exists
// or beyond kMaxWorkspaceStreams streams.
std::pair<void*, std::size_t> workspace_for(int device, cudaStream_t stream) {
  LtState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const auto key = std::make_pair(device, stream);
  auto it = s.workspaces.find(key);
  if (it != s.workspaces.end()) return {it->second, kWorkspaceBytes};
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  FM_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone || s.workspaces.size() >= kMaxWorkspaceStreams)
    return {nullptr, 0};
  void* p = nullptr;
  FM_CUDA_CHECK(cudaMalloc(&p, kWorkspaceBytes));
  s.workspaces.emplace(key, p);
  return {p, kWorkspaceBytes};
}

// Largest power of two <= 16 dividing the address (cuBLASLt's heuristics depend on it).
int alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a == 0) return 0;
  int r = 1;
  while (r < 16 && (a % (2 * r)) == 0) r *= 2;
  return r;
}

// RAII owners of the cuBLASLt descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  MatmulDesc(cublasComputeType_t c, cudaDataType_t s) {
    FM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, c, s));
  }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(d); }
  template <class V>
  void set(cublasLtMatmulDescAttributes_t a, const V& v) {
    FM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)));
  }
};

struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType_t t, index_t rows, index_t cols, index_t ld) {
    FM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, static_cast<std::uint64_t>(rows),
                                               static_cast<std::uint64_t>(cols),
                                               static_cast<std::int64_t>(ld)));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(l); }
};

struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  explicit Preference(std::size_t workspace) {
    FM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    FM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  }
  ~Preference() { cublasLtMatmulPreferenceDestroy(p); }
};

template <class T>
struct LtTypes;
template <>
struct LtTypes<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  static cublasComputeType_t compute() {
    return g_allow_tf32.load(std::memory_order_relaxed) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                        : CUBLAS_COMPUTE_32F;
  }
};
template <>
struct LtTypes<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F;
  static cublasComputeType_t compute() { return CUBLAS_COMPUTE_64F; }
};

cublasLtEpilogue_t lt_epilogue(Epilogue ep, bool has_bias) {
  switch (ep) {
    case Epilogue::none:
      return has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::relu_aux:
      return has_bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX;
    case Epilogue::gelu_aux:
      return has_bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    case Epilogue::drelu:
      return has_bias ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU;
    case Epilogue::dgelu:
      return has_bias ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
    case Epilogue::bgrad_b:
      return CUBLASLT_EPILOGUE_BGRADA;  // our B is cuBLASLt's A
  }
  throw ValueError("gemm: unknown epilogue");
}

}  // namespace

void set_allow_tf32(bool on) {
  g_allow_tf32.store(on, std::memory_order_relaxed);
}
bool allow_tf32() {
  return g_allow_tf32.load(std::memory_order_relaxed);
}

template <class T>
bool gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, const T* A, index_t lda,
          const T* B, index_t ldb, T* C, index_t ldc, Epilogue ep, void* bias, void* aux,
          index_t aux_ld, cudaStream_t stream) {
  FM_CHECK(m > 0 && n > 0 && k > 0, "gemm: expected positive sizes, got m=", m, " n=", n, " k=", k);
  FM_CHECK(ep != Epilogue::bgrad_b || bias, "gemm: the bgrad_b epilogue needs a bias output");
  const bool needs_aux = ep == Epilogue::relu_aux || ep == Epilogue::gelu_aux ||
                         ep == Epilogue::drelu || ep == Epilogue::dgelu;
  FM_CHECK(!needs_aux || aux, "gemm: this epilogue needs an aux buffer");
  int device = 0;
  FM_CUDA_CHECK(cudaGetDevice(&device));
  const cublasLtHandle_t h = handle_for(device);
  const auto [ws, ws_bytes] = workspace_for(device, stream);

  using LT = LtTypes<T>;
  const cublasComputeType_t compute = LT::compute();
  MatmulDesc desc(compute, LT::data);
  // cuBLASLt computes D = op(A') op(B') with A' = our B, B' = our A (see the file comment).
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  const cublasLtEpilogue_t lt_ep = lt_epilogue(ep, bias != nullptr);
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, lt_ep);
  if (bias) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  if (needs_aux) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<std::int64_t>(aux_ld));
  }
  Layout la(LT::data, trans_b ? k : n, trans_b ? n : k, ldb);
  Layout lb(LT::data, trans_a ? m : k, trans_a ? k : m, lda);
  Layout lc(LT::data, n, m, ldc);

  const AlgoKey key{device,
                    static_cast<int>(sizeof(T)),
                    compute == CUBLAS_COMPUTE_32F_FAST_TF32,
                    trans_a,
                    trans_b,
                    m,
                    n,
                    k,
                    lda,
                    ldb,
                    ldc,
                    needs_aux ? aux_ld : 0,
                    static_cast<int>(lt_ep),
                    bias != nullptr,
                    needs_aux,
                    alignment(A),
                    alignment(B),
                    alignment(C),
                    alignment(bias),
                    alignment(needs_aux ? aux : nullptr),
                    ws_bytes};
  AlgoEntry entry{};
  bool cached = false;
  {
    LtState& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.algos.find(key);
    if (it != s.algos.end()) {
      entry = it->second;
      cached = true;
    }
  }
  if (!cached) {
    Preference pref(ws_bytes);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, desc.d, la.l, lb.l, lc.l, lc.l,
                                                             pref.p, 1, &result, &found);
    // A fused epilogue the library rejects for this type/shape/alignment is "unsupported"
    // (the caller falls back); for the plain GEMM every failure is an error.
    const bool rejected = st == CUBLAS_STATUS_NOT_SUPPORTED ||
                          (st == CUBLAS_STATUS_INVALID_VALUE && lt_ep != CUBLASLT_EPILOGUE_DEFAULT);
    if (rejected || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
      entry.supported = false;
    } else {
      FM_CUBLAS_CHECK(st);
      entry.supported = true;
      entry.algo = result.algo;
    }
    LtState& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    s.algos.emplace(key, entry);
  }
  if (!entry.supported) {
    if (lt_ep == CUBLASLT_EPILOGUE_DEFAULT)
      throw CudaError(detail::concat("gemm: cuBLASLt found no algorithm for a plain ",
                                     sizeof(T) == 4 ? "float32" : "float64", " GEMM m=", m,
                                     " n=", n, " k=", k));
    return false;
  }
  const T alpha = T(1), beta = T(0);
  FM_CUBLAS_CHECK(cublasLtMatmul(h, desc.d, &alpha, B, la.l, A, lb.l, &beta, C, lc.l, C, lc.l,
                                 &entry.algo, ws, ws_bytes, stream));
  return true;
}

template bool gemm<float>(bool, bool, index_t, index_t, index_t, const float*, index_t,
                          const float*, index_t, float*, index_t, Epilogue, void*, void*, index_t,
                          cudaStream_t);
template bool gemm<double>(bool, bool, index_t, index_t, index_t, const double*, index_t,
                           const double*, index_t, double*, index_t, Epilogue, void*, void*,
                           index_t, cudaStream_t);

}  // namespace fm::cuda
