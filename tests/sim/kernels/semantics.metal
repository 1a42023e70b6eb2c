#include "common.h"

struct Params {
  int n;
  float scale;
};

// scalar and vector semantics; one thread writes a list of results
[[kernel]] void semantics(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    device uint* uout [[buffer(2)]],
    constant Params& params [[buffer(3)]],
    device const half* hin [[buffer(4)]],
    uint tid [[thread_position_in_grid]]) {
  if (tid != 0) return;
  int o = 0, u = 0;
  // half: conversion rounds to nearest even, arithmetic rounds every operation to half
  half h = half(in[0]);
  out[o++] = float(h);               // 0
  half h2 = h * h + h;
  out[o++] = float(h2);              // 1
  half acc = 0;
  for (int i = 0; i < 64; ++i) acc += hin[i];
  out[o++] = float(acc);             // 2: sequential half accumulation
  // bfloat: round to nearest even from float
  bfloat b = bfloat(in[1]);
  out[o++] = float(b);               // 3
  uout[u++] = as_type<ushort>(b);    // u0
  bfloat b2 = b * bfloat(3.0f);
  out[o++] = float(b2);              // 4: product rounded to bfloat
  uout[u++] = as_type<uint>(in[0]);  // u1
  // vectors
  float4 v = float4(1.0f, 2.0f, 3.0f, 4.0f);
  float4 s = float4(2.0f);
  half4 hv = half4(in[2], in[3], in[4], in[5]);
  float4 fv = float4(hv);
  out[o++] = fv.x; out[o++] = fv.y; out[o++] = fv.z; out[o++] = fv.w;     // 5..8
  float2 xy = v.xy;
  float2 zw = v.zw;
  float3 xyz = v.xyz;
  float4 c = float4(zw, xy);
  out[o++] = c.x; out[o++] = c.y; out[o++] = c.z; out[o++] = c.w;         // 9..12
  float4 d = float4(xyz, 9.0f) * s + 1.0f;
  out[o++] = d[0]; out[o++] = d[1]; out[o++] = d[2]; out[o++] = d[3];     // 13..16
  out[o++] = dot(v, s);                                                   // 17
  float4 w = v;
  w.xy = float2(7.0f, 8.0f);
  w[3] = -1.0f;
  out[o++] = w.x; out[o++] = w.y; out[o++] = w.z; out[o++] = w.w;         // 18..21
  out[o++] = float(sizeof(float3)); out[o++] = float(sizeof(half4)); out[o++] = float(alignof(float4)); // 22..24
  uint2 bits = as_type<uint2>(v.xy);
  uout[u++] = bits.x; uout[u++] = bits.y;                                 // u2, u3
  uchar4 bytes = as_type<uchar4>(0x04030201u);
  uout[u++] = bytes.x + 10 * bytes.y + 100 * bytes.z + 1000 * bytes.w;    // u4
  int4 iv = int4(float4(-1.5f, 2.7f, 3.2f, -0.2f));
  uout[u++] = as_type<uint>(iv.x); uout[u++] = uint(iv.y);                // u5, u6
  float4 m = max(v, float4(2.5f)) + min(v, float4(2.5f)) * abs(float4(-1.0f));
  out[o++] = m.x; out[o++] = m.w;                                         // 25, 26
  out[o++] = clamp(in[6], 0.0f, 1.0f);                                    // 27
  out[o++] = select(1.0f, 2.0f, in[6] > 0.0f);                            // 28
  out[o++] = fma(in[0], 2.0f, 1.0f);                                      // 29
  out[o++] = exp(1.0f);                                                   // 30
  out[o++] = rsqrt(4.0f);                                                 // 31
  out[o++] = float(numeric_limits<half>::max());                          // 32
  out[o++] = numeric_limits<float>::lowest();                             // 33
  out[o++] = float(params.n) * params.scale;                              // 34
  Params p = params;  // copying a struct out of constant memory
  out[o++] = float(p.n);                                                  // 35
  half4 hs = half4(1.0h, 2.0h, 3.0h, 4.0h) * half(0.5f);
  out[o++] = float(hs.w);                                                 // 36
  float4 q = float4(1.0f, float2(2.0f, 3.0f), 4.0f);
  out[o++] = q.y + q.z;                                                   // 37
  bool4 gt = v > float4(2.0f);
  uout[u++] = uint(all(gt)) + 2 * uint(any(gt)) + 4 * uint(gt.z);         // u7
  packed_float3 pk = packed_float3(1.0f, 2.0f, 3.0f);
  out[o++] = float(sizeof(pk)) + pk[2];                                   // 38
  out[o++] = metal::precise::sqrt(2.0f) - metal::fast::sqrt(2.0f);        // 39
  out[o++] = float(static_cast<int>(in[1]));                              // 40
}

// more library functions
[[kernel]] void library_misc(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    device uint* uout [[buffer(2)]],
    uint tid [[thread_position_in_grid]]) {
  if (tid != 0) return;
  metal::array<float, 3> a = {in[0], in[1], in[2]};
  float s = 0;
  for (float v : a) s += v;
  out[0] = s + float(a.size());
  out[1] = max3(in[0], in[1], in[2]);
  out[2] = min3(in[0], in[1], in[2]);
  out[3] = median3(in[0], in[1], in[2]);
  out[4] = float(popcount(0xF0F0u)) + float(clz(1u)) + float(ctz(8u));
  uout[0] = reverse_bits(1u);
  uout[1] = extract_bits(0xABCDu, 4u, 8u);
  out[5] = mix(in[0], in[1], 0.25f);
  out[6] = length(float2(3.0f, 4.0f));
  out[7] = float(isnan(in[3])) + 2.0f * float(isinf(in[4]));
  half4 hv = abs(half4(-1.0h, 2.0h, -3.0h, 4.0h));
  out[8] = float(hv.x + hv.z);
  float4 q = fma(float4(1.0f), float4(2.0f), float4(3.0f));
  out[9] = q.w;
}

// elementwise math, float and half
template <typename T>
[[kernel]] void math_funcs(
    device const T* x [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint i [[thread_position_in_grid]]) {
  T v = x[i];
  device float* o = out + i * 20;
  o[0] = float(exp(v));
  o[1] = float(exp2(v));
  o[2] = float(log(abs(v) + T(1)));
  o[3] = float(log2(abs(v) + T(1)));
  o[4] = float(sqrt(abs(v)));
  o[5] = float(rsqrt(abs(v) + T(1)));
  o[6] = float(sin(v));
  o[7] = float(cos(v));
  o[8] = float(tanh(v));
  o[9] = float(floor(v));
  o[10] = float(ceil(v));
  o[11] = float(round(v));
  o[12] = float(trunc(v));
  o[13] = float(fract(v));
  o[14] = float(sign(v));
  o[15] = float(pow(abs(v), T(1.5f)));
  o[16] = float(fmod(v, T(0.75f)));
  o[17] = float(saturate(v));
  o[18] = float(max(v, T(0.5f)));
  o[19] = float(precise::atan2(v, T(2)));
}
instantiate_kernel("math_funcs_float", math_funcs, float)
instantiate_kernel("math_funcs_half", math_funcs, half)

// integer and boolean vectors
[[kernel]] void int_vectors(
    device const uint4* w [[buffer(0)]],
    device uint4* out [[buffer(1)]],
    device int4* iout [[buffer(2)]],
    uint i [[thread_position_in_grid]]) {
  uint4 v = w[i];
  out[i * 4 + 0] = (v >> 4) & 0xfu;
  out[i * 4 + 1] = (v << uint4(1, 2, 3, 4)) | 1u;
  out[i * 4 + 2] = select(v, uint4(7), v > uint4(100));
  out[i * 4 + 3] = uint4(as_type<uchar4>(v.x));
  int4 s = int4(v) - 200;
  iout[i * 2 + 0] = s % 7;
  iout[i * 2 + 1] = abs(s) / int4(3) + (-s);
}
