#include "metal/qmm_plan.h"

#include <sstream>

namespace mlx_kernels::metal {

namespace {

uint32_t ceil_div(int64_t a, int64_t b) {
  return static_cast<uint32_t>((a + b - 1) / b);
}

int next_pow2_rows(int64_t m) {
  int rows = 1;
  while (rows < m) {
    rows *= 2;
  }
  return rows;
}

} // namespace

const char* kernel_kind_name(QmmKernel k) {
  switch (k) {
    case QmmKernel::Qmv: return "qmv";
    case QmmKernel::Qvm: return "qvm";
    case QmmKernel::Qmm: return "qmm";
  }
  return "?";
}

QmmPlan plan_quantized_matmul(const QmmParams& p, const std::string& dtype) {
  QmmPlan plan;
  std::ostringstream name;
  if (p.M <= kQmvMaxRows) {
    plan.rows = next_pow2_rows(p.M);
    if (p.transpose) {
      // 2 simdgroups x 4 columns per threadgroup.
      plan.kernel = QmmKernel::Qmv;
      plan.threadgroup = {64, 1, 1};
      plan.grid = {ceil_div(p.N, 8), 1, 1};
    } else {
      // One thread per packed word of a weight row, 64 per threadgroup.
      plan.kernel = QmmKernel::Qvm;
      plan.threadgroup = {64, 1, 1};
      plan.grid = {ceil_div(p.N / p.values_per_word(), 64), 1, 1};
    }
    name << "mlxk_" << kernel_kind_name(plan.kernel) << "_" << dtype << "_gs"
         << p.group_size << "_b" << p.bits << "_r" << plan.rows;
  } else {
    // 32 x 32 output tiles, 4 simdgroups.
    plan.kernel = QmmKernel::Qmm;
    plan.rows = 32;
    plan.threadgroup = {128, 1, 1};
    plan.grid = {ceil_div(p.N, 32), ceil_div(p.M, 32), 1};
    name << "mlxk_qmm_" << dtype << "_gs" << p.group_size << "_b" << p.bits
         << (p.transpose ? "_t" : "_n");
  }
  plan.name = name.str();
  return plan;
}

} // namespace mlx_kernels::metal
