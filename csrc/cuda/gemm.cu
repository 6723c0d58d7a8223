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
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// The operand type of a GEMM (In) and of its output (Out): the same for float32 and float64;
// bfloat16 / float16 operands with a float32 output and float32 accumulation (mixed
// precision: fp32 master weights, half-width GEMM operands on the tensor cores).
template <class In, class Out>
struct LtPair {
  static constexpr cudaDataType_t in = LtTypes<In>::data, out = LtTypes<Out>::data;
  static constexpr int code = static_cast<int>(sizeof(In));
  static cublasComputeType_t compute() { return LtTypes<Out>::compute(); }
};
template <>
struct LtPair<__nv_bfloat16, float> {
  static constexpr cudaDataType_t in = CUDA_R_16BF, out = CUDA_R_32F;
  static constexpr int code = 102;
  static cublasComputeType_t compute() { return CUBLAS_COMPUTE_32F; }
};
template <>
struct LtPair<__half, float> {
  static constexpr cudaDataType_t in = CUDA_R_16F, out = CUDA_R_32F;
  static constexpr int code = 103;
  static cublasComputeType_t compute() { return CUBLAS_COMPUTE_32F; }
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

namespace {

template <class In, class Out>
bool gemm_impl(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, const In* A,
               index_t lda, const In* B, index_t ldb, Out* C, index_t ldc, Epilogue ep, void* bias,
               void* aux, index_t aux_ld, cudaStream_t stream) {
  FM_CHECK(m > 0 && n > 0 && k > 0, "gemm: expected positive sizes, got m=", m, " n=", n, " k=", k);
  FM_CHECK(ep != Epilogue::bgrad_b || bias, "gemm: the bgrad_b epilogue needs a bias output");
  const bool needs_aux = ep == Epilogue::relu_aux || ep == Epilogue::gelu_aux ||
                         ep == Epilogue::drelu || ep == Epilogue::dgelu;
  FM_CHECK(!needs_aux || aux, "gemm: this epilogue needs an aux buffer");
  int device = 0;
  FM_CUDA_CHECK(cudaGetDevice(&device));
  const cublasLtHandle_t h = handle_for(device);
  const auto [ws, ws_bytes] = workspace_for(device, stream);

  using LT = LtPair<In, Out>;
  const cublasComputeType_t compute = LT::compute();
  MatmulDesc desc(compute, LT::out);
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
  Layout la(LT::in, trans_b ? k : n, trans_b ? n : k, ldb);
  Layout lb(LT::in, trans_a ? m : k, trans_a ? k : m, lda);
  Layout lc(LT::out, n, m, ldc);

  const AlgoKey key{device,
                    LT::code,
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
      throw CudaError(detail::concat("gemm: cuBLASLt found no algorithm for a plain GEMM (type ",
                                     LT::code, ") m=", m, " n=", n, " k=", k));
    return false;
  }
  const Out alpha = Out(1), beta = Out(0);
  FM_CUBLAS_CHECK(cublasLtMatmul(h, desc.d, &alpha, B, la.l, A, lb.l, &beta, C, lc.l, C, lc.l,
                                 &entry.algo, ws, ws_bytes, stream));
  return true;
}

}  // namespace

template <class T>
bool gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, const T* A, index_t lda,
          const T* B, index_t ldb, T* C, index_t ldc, Epilogue ep, void* bias, void* aux,
          index_t aux_ld, cudaStream_t stream) {
  return gemm_impl<T, T>(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, ep, bias, aux, aux_ld,
                         stream);
}

void gemm_half(HalfType type, bool trans_a, bool trans_b, index_t m, index_t n, index_t k,
               const void* A, index_t lda, const void* B, index_t ldb, float* C, index_t ldc,
               cudaStream_t stream) {
  if (type == HalfType::bf16)
    gemm_impl<__nv_bfloat16, float>(trans_a, trans_b, m, n, k,
                                    static_cast<const __nv_bfloat16*>(A), lda,
                                    static_cast<const __nv_bfloat16*>(B), ldb, C, ldc,
                                    Epilogue::none, nullptr, nullptr, 0, stream);
  else
    gemm_impl<__half, float>(trans_a, trans_b, m, n, k, static_cast<const __half*>(A), lda,
                             static_cast<const __half*>(B), ldb, C, ldc, Epilogue::none, nullptr,
                             nullptr, 0, stream);
}

namespace {

// float32 -> half-width operand copies (round to nearest even).
template <class H>
__device__ __forceinline__ H to_half(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 to_half<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half to_half<__half>(float v) {
  return __float2half_rn(v);
}

template <class H>
__global__ void to_half_kernel(const float* __restrict__ x, H* __restrict__ y, index_t n) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = to_half<H>(x[i]);
}

}  // namespace

void convert_to_half(HalfType type, const float* x, void* y, index_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, kElementwiseThreads);
  if (type == HalfType::bf16)
    to_half_kernel<__nv_bfloat16>
        <<<grid, kElementwiseThreads, 0, stream>>>(x, static_cast<__nv_bfloat16*>(y), n);
  else
    to_half_kernel<__half><<<grid, kElementwiseThreads, 0, stream>>>(x, static_cast<__half*>(y), n);
  FM_CUDA_CHECK_LAUNCH("to_half_kernel");
}

template bool gemm<float>(bool, bool, index_t, index_t, index_t, const float*, index_t,
                          const float*, index_t, float*, index_t, Epilogue, void*, void*, index_t,
                          cudaStream_t);
template bool gemm<double>(bool, bool, index_t, index_t, index_t, const double*, index_t,
                           const double*, index_t, double*, index_t, Epilogue, void*, void*,
                           index_t, cudaStream_t);

}  // namespace fm::cuda
