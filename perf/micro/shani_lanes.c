/* SHA-256 compressions with SHA-NI, N independent messages interleaved (N = 1, 2, 4).
 * Every lane's state feeds the printed checksum, so the compiler cannot drop lanes.
 * Build and run: cc -O3 -funroll-all-loops -msha -msse4.1 perf/micro/shani_lanes.c -o /tmp/shani && /tmp/shani
 * (RESULTS cites it: on the Xeon there, 4 lanes give no more throughput than 1.) */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
static const uint32_t K[64] = {
  0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
  0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
  0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
  0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
  0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
  0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
  0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
  0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define COMP(N) \
__attribute__((noinline)) static void comp##N(__m128i st[][2], __m128i m[][4]) { \
  __m128i s0[N], s1[N], a0[N], a1[N], w[N][4]; \
  for (int l = 0; l < N; l++) { s0[l] = st[l][0]; s1[l] = st[l][1]; a0[l] = s0[l]; a1[l] = s1[l]; \
    for (int i = 0; i < 4; i++) w[l][i] = m[l][i]; } \
  for (int r = 0; r < 16; r++) { \
    __m128i k = _mm_loadu_si128((const __m128i *)&K[4 * r]); \
    for (int l = 0; l < N; l++) { \
      __m128i x = _mm_add_epi32(w[l][r & 3], k); \
      s1[l] = _mm_sha256rnds2_epu32(s1[l], s0[l], x); \
      x = _mm_shuffle_epi32(x, 0x0e); \
      s0[l] = _mm_sha256rnds2_epu32(s0[l], s1[l], x); \
      if (r < 12) { __m128i t = _mm_sha256msg1_epu32(w[l][r & 3], w[l][(r + 1) & 3]); \
        t = _mm_add_epi32(t, _mm_alignr_epi8(w[l][(r + 3) & 3], w[l][(r + 2) & 3], 4)); \
        w[l][r & 3] = _mm_sha256msg2_epu32(t, w[l][(r + 3) & 3]); } } } \
  for (int l = 0; l < N; l++) { st[l][0] = _mm_add_epi32(s0[l], a0[l]); st[l][1] = _mm_add_epi32(s1[l], a1[l]); } }
COMP(1)
COMP(2)
COMP(4)
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define RUN(N) { \
  __m128i st[N][2], m[N][4]; \
  for (int l = 0; l < N; l++) { st[l][0] = _mm_set1_epi32(l); st[l][1] = _mm_set1_epi32(l + 9); \
    for (int i = 0; i < 4; i++) m[l][i] = _mm_set1_epi32(l * 7 + i); } \
  long it = 2000000; double t = now(); \
  for (long i = 0; i < it; i++) { comp##N(st, m); m[0][0] = st[0][0]; } \
  t = now() - t; int acc = 0; \
  for (int l = 0; l < N; l++) acc += _mm_cvtsi128_si32(st[l][0]) + _mm_cvtsi128_si32(st[l][1]); \
  printf("%d lane(s): %.1f ns per block and lane (checksum %d)\n", N, t / it / N * 1e9, acc); }
int main(void) { RUN(1) RUN(2) RUN(4) return 0; }
