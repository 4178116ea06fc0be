/* The core clock right after AVX2 (vpmuludq) and AVX-512 IFMA (vpmadd52luq) loops, from a
 * dependent imul chain (3 cycles each), plus the multiply throughput of those loops.
 * Build and run: cc -O2 -mavx2 -mavx512f -mavx512ifma perf/micro/clock_under_load.c -o /tmp/clk && /tmp/clk
 * (the IFMA part needs a CPU with AVX-512 IFMA; RESULTS cites both parts). */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec a; clock_gettime(CLOCK_MONOTONIC, &a); return a.tv_sec + a.tv_nsec * 1e-9; }
static double chain(long n) { long x = 3; double t = now();
  __asm__ volatile("1: imul %0,%0\n imul %0,%0\n imul %0,%0\n imul %0,%0\n sub $1,%1\n jnz 1b" : "+r"(x), "+r"(n));
  return now() - t; }
__attribute__((noinline)) static __m256i avx2(long n, __m256i a) { __m256i x0=a,x1=a,x2=a,x3=a,x4=a,x5=a,x6=a,x7=a;
  for (long i = 0; i < n; i++) { x0=_mm256_mul_epu32(x0,x1); x1=_mm256_mul_epu32(x1,x2); x2=_mm256_mul_epu32(x2,x3);
    x3=_mm256_mul_epu32(x3,x4); x4=_mm256_mul_epu32(x4,x5); x5=_mm256_mul_epu32(x5,x6); x6=_mm256_mul_epu32(x6,x7); x7=_mm256_mul_epu32(x7,x0);
    __asm__ volatile("" : "+x"(x0), "+x"(x3), "+x"(x7)); }
  return _mm256_add_epi64(_mm256_add_epi64(x0,x1), _mm256_add_epi64(x6,x7)); }
__attribute__((noinline)) static __m512i ifma(long n, __m512i a) { __m512i x0=a,x1=a,x2=a,x3=a,x4=a,x5=a,x6=a,x7=a;
  for (long i = 0; i < n; i++) { x0=_mm512_madd52lo_epu64(x0,a,x1); x1=_mm512_madd52lo_epu64(x1,a,x2); x2=_mm512_madd52lo_epu64(x2,a,x3);
    x3=_mm512_madd52lo_epu64(x3,a,x4); x4=_mm512_madd52lo_epu64(x4,a,x5); x5=_mm512_madd52lo_epu64(x5,a,x6); x6=_mm512_madd52lo_epu64(x6,a,x7); x7=_mm512_madd52lo_epu64(x7,a,x0);
    __asm__ volatile("" : "+v"(x0), "+v"(x3), "+v"(x7)); }
  return _mm512_add_epi64(_mm512_add_epi64(x0,x1), _mm512_add_epi64(x6,x7)); }
static volatile long long seed = 3; /* opaque, so the loops cannot be folded */
int main(void) {
  long n = 200000000, m = 20000; double t, tot;
  __m256i a = _mm256_set1_epi64x(seed);
  t = now(); a = avx2(n, a); t = now() - t;
  printf("vpmuludq ymm: %.2f G/s\n", 8.0 * n / t / 1e9);
  tot = 0; for (int k = 0; k < 2000; k++) { a = avx2(20000, a); tot += chain(m); }
  printf("clock right after vpmuludq loops: %.3f GHz\n", 3.0 * 4 * m * 2000 / tot / 1e9);
  __m512i b = _mm512_set1_epi64(seed);
  t = now(); b = ifma(n, b); t = now() - t;
  printf("vpmadd52luq zmm: %.2f G/s\n", 8.0 * n / t / 1e9);
  tot = 0; for (int k = 0; k < 2000; k++) { b = ifma(20000, b); tot += chain(m); }
  printf("clock right after vpmadd52luq loops: %.3f GHz\n", 3.0 * 4 * m * 2000 / tot / 1e9);
  printf("clock, scalar only: %.3f GHz\n", 3.0 * 4 * 50000000 / chain(50000000) / 1e9);
  long long s[8]; _mm512_storeu_si512(s, _mm512_add_epi64(b, _mm512_castsi256_si512(a))); return (int)(s[0] & 1) * 0;
}
