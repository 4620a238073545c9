/* The true peak: libebur128's polyphase interpolator (double accumulation, the result rounded
 * to float32), evaluated only where a bound says it can beat the peak found so far.
 *
 * Most of the audio is never converted, let alone interpolated. Per region of up to 256 Ki
 * frames: the extremes of every 256-frame block on the raw samples (int16, int32, or float32
 * through an integer key that orders them; vectorised), which give the region's sample peak
 * before anything is interpolated; then the blocks whose bound beats the peak, the one with the
 * highest bound first: their range bound, then their curvature bound (second differences on the
 * raw samples); a block that passes both is converted once, each 16-frame chunk of it bounded
 * by the tighter of the two, and only the chunks whose bound still beats the peak are
 * interpolated; with AVX-512 the chunks' bounds and values are computed in float32 instead,
 * and only the chunks whose values come within the float32 error of the peak are interpolated
 * in double (block_f32). A region holding a NaN or an infinity is interpolated in full. With
 * AVX-512, where the range bound rules out few loud blocks (the taps' sum of |taps| is 2.3 at
 * 2x, 1.9 at 4x), a region whose sampled blocks mostly beat it has every block's curvature
 * measured in the pass that finds its extremes instead (most_beat, block_scan16). When the
 * caller passes every block's extremes and curvature (the detail pass computes them as it reads
 * the samples: kernel.h's wf_block_stat), neither pass runs: the blocks are ranked by the
 * tighter of both bounds at once.
 *
 * The range bound: an interpolated value is y = sum_t c_t x_t over a window of samples that all
 * lie in [l, h]. With m = (h + l) / 2, y = m * sum_t c_t + sum_t c_t (x_t - m) and |x_t - m| <=
 * (h - l) / 2, so |y| <= |h + l| / 2 * S + (h - l) / 2 * G, with S = |sum of the phase's taps|
 * and G = sum of |taps| (the largest of each over the phases). The curvature bound: see
 * curvature_terms. A window reaches taps - 1 frames back: for a block into the block before it,
 * for a chunk into the one (4x) or two (2x) before it, or into the history; their extremes and
 * second differences are included. A NaN bound never counts as beaten. Both bounds are
 * computed from the converted (float32-rounded) samples the interpolator reads, or within a
 * few float32 ulps of the largest sample from the raw ones; BOUND_SLACK covers that and the
 * rounding of the values to float32. */
#include "kernel.h"

#ifdef WF_X86_SIMD
#include <immintrin.h>
#endif

#include <stdlib.h>

#define CHUNK 16
#define BLOCK 256          /* 16 chunks */
#define REGION_BLOCKS 1024 /* blocks ranked together: 256 Ki frames */
#define PIECE 65536        /* frames of a strided buffer copied to contiguous memory at a time */
#define MAX_TAPS 24
#define MAX_PHASES 3
/* The bounds are computed in double (a block's curvature from raw samples in float32, within 3
 * ulps of the largest sample: with sum |e_j| < 0.5, under 2e-7 of the peak); the interpolated
 * values are rounded to float32 afterwards (6e-8): this relative slack covers both. */
#define BOUND_SLACK (1.0 + 1e-6)
#define AI inline __attribute__((always_inline))

struct interpolator {
    int taps;   /* coefficients per phase, newest sample first */
    int phases; /* interpolated phases (the sample itself is phase 0, not among them) */
    double coeff[MAX_PHASES][MAX_TAPS];
    double sum[MAX_PHASES]; /* |sum of the phase's taps| */
    double abs[MAX_PHASES]; /* sum of |taps| */
    double sum_max, abs_max; /* the largest of each over the phases: the bound of all */
    /* The curvature bound (see curvature_terms): |alpha| + |beta| and sum of |e_j|, the largest
     * over the phases. */
    double pair_max, curve_max;
    float coeff_f[MAX_PHASES][MAX_TAPS]; /* the taps rounded to float32 (block_f32) */
};

/* The largest |interpolated value| of the 16 frames at x[0..15] (x[-taps+1..-1] before them),
 * in vectors of `lanes` doubles (GCC vector extensions: native on every target that has them,
 * lowered to scalars elsewhere). `taps` and `phases` are known at compile time: one
 * multiply-add per tap and vector, summed from the newest sample to the oldest as libebur128
 * sums. */
#define DEFINE_CHUNK_PEAK(lanes)                                                           \
    typedef double vec##lanes __attribute__((vector_size(8 * (lanes))));                   \
    typedef long long mask##lanes __attribute__((vector_size(8 * (lanes))));               \
    static inline __attribute__((always_inline)) double                                    \
    chunk_peak##lanes(const double *x, const struct interpolator *ip, const int taps,      \
                      const int phases) {                                                  \
        enum { V = CHUNK / (lanes) };                                                      \
        vec##lanes top[V], sign;                                                           \
        for (int i = 0; i < (lanes); i++) {                                                \
            sign[i] = -0.0;                                                                \
        }                                                                                  \
        for (int v = 0; v < V; v++) {                                                      \
            top[v] = sign - sign;                                                          \
        }                                                                                  \
        for (int f = 0; f < phases; f++) {                                                 \
            vec##lanes acc[V];                                                             \
            for (int v = 0; v < V; v++) {                                                  \
                acc[v] = sign - sign;                                                      \
            }                                                                              \
            for (int t = 0; t < taps; t++) {                                               \
                const double c = ip->coeff[f][t];                                          \
                for (int v = 0; v < V; v++) {                                              \
                    vec##lanes xv;                                                         \
                    memcpy(&xv, x + v * (lanes) - t, sizeof xv);                           \
                    acc[v] += c * xv;                                                      \
                }                                                                          \
            }                                                                              \
            for (int v = 0; v < V; v++) {                                                  \
                vec##lanes a = (vec##lanes)((mask##lanes)acc[v] & ~(mask##lanes)sign);     \
                mask##lanes more = a > top[v];                                             \
                top[v] = (vec##lanes)(((mask##lanes)a & more) | ((mask##lanes)top[v] & ~more)); \
            }                                                                              \
        }                                                                                  \
        double m = 0.0;                                                                    \
        for (int v = 0; v < V; v++) {                                                      \
            for (int i = 0; i < (lanes); i++) {                                            \
                m = top[v][i] > m ? top[v][i] : m;                                         \
            }                                                                              \
        }                                                                                  \
        return m;                                                                          \
    }

DEFINE_CHUNK_PEAK(2)
DEFINE_CHUNK_PEAK(4)
DEFINE_CHUNK_PEAK(8)

/* The interpolated peak of one partial chunk (the end of a block), frame by frame. */
static inline __attribute__((always_inline)) double
tail_peak(const double *x, Py_ssize_t len, const struct interpolator *ip, const int taps,
          const int phases) {
    double m = 0.0;
    for (Py_ssize_t i = 0; i < len; i++) {
        for (int f = 0; f < phases; f++) {
            double acc = 0.0;
            for (int t = 0; t < taps; t++) {
                acc += ip->coeff[f][t] * x[i - t];
            }
            acc = fabs(acc);
            m = acc > m ? acc : m;
        }
    }
    return m;
}

/* The curvature bound of one phase. Write the window x_0..x_{T-1} (x_t: t samples back) from
 * its centre pair x_a, x_{a+1} (a = T/2 - 1) and its second differences d_j = x_{j-1} - 2 x_j +
 * x_{j+1} (j = 1..T-2), by summing twice outwards:
 *   x_t = x_a - (a - t)(x_{a+1} - x_a) + sum_{j=t+1..a} (j - t) d_j          (t <= a)
 *   x_t = x_{a+1} + (t - a - 1)(x_{a+1} - x_a) + sum_{j=a+1..t-1} (t - j) d_j  (t > a).
 * Then y = sum_t c_t x_t = alpha x_a + beta x_{a+1} + sum_j e_j d_j, with
 *   alpha = sum_{t<=a} c_t (1 + a - t) - sum_{t>a} c_t (t - a - 1),
 *   beta = sum_{t>a} c_t (t - a) - sum_{t<=a} c_t (a - t),
 *   e_j = sum_{t<j} c_t (j - t) (j <= a),  e_j = sum_{t>j} c_t (t - j) (j > a),
 * so |y| <= (|alpha| + |beta|) max(|x_a|, |x_{a+1}|) + (sum_j |e_j|) max_j |d_j|. The sinc nearly
 * reproduces straight lines: for this interpolator alpha + beta is ~1.0005 and sum |e_j| ~0.30
 * (4x) or ~0.42 (2x), so on smooth audio (where the window's range is large but its second
 * differences are small: the slopes of a low tone) the bound sits just above the samples. */
static void curvature_terms(const double *c, int taps, double *pair, double *curve) {
    int a = taps / 2 - 1;
    double alpha = 0.0, beta = 0.0, sum = 0.0;
    for (int t = 0; t < taps; t++) {
        alpha += t <= a ? c[t] * (1 + a - t) : -c[t] * (t - a - 1);
        beta += t <= a ? -c[t] * (a - t) : c[t] * (t - a);
    }
    for (int j = 1; j < taps - 1; j++) {
        double e = 0.0;
        for (int t = 0; t < taps; t++) {
            e += j <= a ? (t < j ? c[t] * (j - t) : 0.0) : (t > j ? c[t] * (t - j) : 0.0);
        }
        sum += fabs(e);
    }
    *pair = fabs(alpha) + fabs(beta);
    *curve = sum;
}

static int read_taps(PyObject *obj, struct interpolator *ip) {
    Py_buffer tv;
    if (PyObject_GetBuffer(obj, &tv, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    int ok = tv.itemsize == 8 && tv.ndim == 2 && tv.format && strchr(tv.format, 'd');
    Py_ssize_t rows = ok ? tv.shape[0] : 0, cols = ok ? tv.shape[1] : 0;
    ip->phases = (int)cols;
    ip->taps = (int)rows - 1;
    ok = ok && ((rows == 13 && cols == 3) || (rows == 25 && cols == 1) || rows == 0);
    if (ok && rows == 0) {
        ip->taps = ip->phases = 0;
    }
    for (int f = 0; ok && f < ip->phases; f++) {
        ip->sum[f] = ip->abs[f] = 0.0;
        for (Py_ssize_t t = 0; t < rows; t++) {
            double c;
            memcpy(&c, (const char *)tv.buf + t * tv.strides[0] + f * tv.strides[1], 8);
            if (t == rows - 1) {
                ok = c == 0.0; /* the last row only reaches phase 0, which is the sample */
                break;
            }
            ip->coeff[f][t] = c;
            ip->coeff_f[f][t] = (float)c;
            ip->sum[f] += c;
            ip->abs[f] += fabs(c);
        }
        ip->sum[f] = fabs(ip->sum[f]);
    }
    ip->sum_max = ip->abs_max = ip->pair_max = ip->curve_max = 0.0;
    for (int f = 0; ok && f < ip->phases; f++) {
        ip->sum_max = ip->sum[f] > ip->sum_max ? ip->sum[f] : ip->sum_max;
        ip->abs_max = ip->abs[f] > ip->abs_max ? ip->abs[f] : ip->abs_max;
        double pair, curve;
        curvature_terms(ip->coeff[f], ip->taps, &pair, &curve);
        ip->pair_max = pair > ip->pair_max ? pair : ip->pair_max;
        ip->curve_max = curve > ip->curve_max ? curve : ip->curve_max;
    }
    PyBuffer_Release(&tv);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "taps: expected interpolator_taps() of 4x or 2x");
        return -1;
    }
    return 0;
}

/* Raw samples are read as integers: int16, int32, or a float32's bits as int32. A float's key
 * orders floats as integers (negative ones have their magnitude bits flipped); it is its own
 * inverse. NaN keys lie beyond the infinities', so a NaN shows up in a block's extremes. */
typedef int16_t raw16 __attribute__((may_alias));
typedef int32_t raw32 __attribute__((may_alias));

static AI int32_t float_key(int32_t bits) {
    return bits ^ (int32_t)((uint32_t)(bits >> 31) >> 1);
}

/* A raw value (a key for floats) as libebur128 feeds it: float32 at full scale 1.0, held as
 * double. The scale is a power of two: int16 samples (and float32 ones at scale 1) are exact in
 * float32 already (int16 ones are not even rounded, as before). Monotonic, so the extremes of
 * the converted samples are the converted extremes. */
static AI double unit_of(int32_t key, enum kind k, double inv) {
    if (k == KIND_FLOAT32) {
        int32_t bits = float_key(key);
        float f;
        memcpy(&f, &bits, sizeof f);
        return (double)(float)((double)f * inv);
    }
    return k == KIND_INT16 ? (double)key * inv : (double)(float)((double)key * inv);
}

static AI int32_t key_at(const void *base, Py_ssize_t i, enum kind k) {
    if (k == KIND_INT16) {
        return ((const raw16 *)base)[i];
    }
    int32_t r = ((const raw32 *)base)[i];
    return k == KIND_FLOAT32 ? float_key(r) : r;
}

/* Largest and smallest key of x[from..from+len): plain loops GCC vectorises (int16: 32 lanes
 * with AVX-512BW), fully when len is a constant. */
static AI void key_extremes(const void *base, Py_ssize_t from, Py_ssize_t len, enum kind k,
                            int32_t *hi, int32_t *lo) {
    if (k == KIND_INT16) {
        const raw16 *x = (const raw16 *)base + from;
        int16_t h = INT16_MIN, l = INT16_MAX;
        for (Py_ssize_t i = 0; i < len; i++) {
            h = x[i] > h ? x[i] : h;
            l = x[i] < l ? x[i] : l;
        }
        *hi = h;
        *lo = l;
    } else if (k == KIND_INT32) {
        const raw32 *x = (const raw32 *)base + from;
        int32_t h = INT32_MIN, l = INT32_MAX;
        for (Py_ssize_t i = 0; i < len; i++) {
            h = x[i] > h ? x[i] : h;
            l = x[i] < l ? x[i] : l;
        }
        *hi = h;
        *lo = l;
    } else {
        /* Floats without keying every sample: the largest and smallest bits as signed and the
         * largest as unsigned. Some sign bit clear: the signed largest is the largest float
         * (a NaN beyond +inf); all negative: it is the signed smallest (the one nearest -0).
         * Some negative: the unsigned largest is the smallest float (a NaN beyond -inf); none:
         * it is the signed smallest. */
        const raw32 *x = (const raw32 *)base + from;
        int32_t smax = INT32_MIN, smin = INT32_MAX;
        uint32_t umax = 0;
        for (Py_ssize_t i = 0; i < len; i++) {
            uint32_t u = (uint32_t)x[i];
            smax = x[i] > smax ? x[i] : smax;
            smin = x[i] < smin ? x[i] : smin;
            umax = u > umax ? u : umax;
        }
        int32_t h = smax >= 0 ? smax : smin, l = umax >= 0x80000000u ? (int32_t)umax : smin;
        *hi = float_key(h);
        *lo = float_key(l);
    }
}

/* Extremes as converted samples. */
static AI void extremes(const void *base, Py_ssize_t from, Py_ssize_t len, enum kind k,
                        double inv, double *hi, double *lo) {
    int32_t h, l;
    key_extremes(base, from, len, k, &h, &l);
    *hi = unit_of(h, k, inv);
    *lo = unit_of(l, k, inv);
}

/* NaN-propagating max and min (a NaN bound must never be beaten). */
static AI double wider_hi(double a, double b) { return a > b || a != a ? a : b; }
static AI double wider_lo(double a, double b) { return a < b || a != a ? a : b; }

static AI double bound_of(double h, double l, const struct interpolator *ip) {
    return (fabs(h + l) * ip->sum_max + (h - l) * ip->abs_max) * (0.5 * BOUND_SLACK);
}

/* The curvature bound (curvature_terms) of windows within [l, h] whose second differences are
 * at most `curve` in magnitude. */
static AI double curved_bound(double h, double l, double curve, const struct interpolator *ip) {
    double mag = wider_hi(h, -l);
    return (mag * ip->pair_max + curve * ip->curve_max) * BOUND_SLACK;
}

/* The smaller bound; NaN if the first is (the second is NaN only when the first is too). */
static AI double tighter(double range, double curved) {
    return curved < range ? curved : range;
}

/* The largest |second difference| x[q-1] - 2 x[q] + x[q+1] of the raw samples, q in
 * [from, to), in raw units: exact for int16; for int32 and floats computed in float32 (8 or
 * 16 lanes), within 3 float32 ulps of the largest sample of the samples the interpolator reads
 * (the scale is a power of two: converting then scaling is scaling then converting). The
 * bound's slack covers that, since every sample here is at most the peak. Loops GCC
 * vectorises. */
static AI double raw_curve(const void *base, Py_ssize_t from, Py_ssize_t to, enum kind k) {
    if (k == KIND_INT16) {
        const raw16 *x = (const raw16 *)base;
        int32_t m = 0;
        for (Py_ssize_t q = from; q < to; q++) {
            int32_t v = (int32_t)x[q - 1] + (int32_t)x[q + 1] - 2 * (int32_t)x[q];
            v = v < 0 ? -v : v;
            m = v > m ? v : m;
        }
        return m;
    }
    const raw32 *xi = (const raw32 *)base;
    const float *xf = (const float *)base;
    int32_t m = 0; /* non-negative floats order as their bits */
    for (Py_ssize_t q = from; q < to; q++) {
        float v = k == KIND_INT32 ? (float)xi[q - 1] + (float)xi[q + 1] - 2.0f * (float)xi[q]
                                  : xf[q - 1] + xf[q + 1] - 2.0f * xf[q];
        int32_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= 0x7fffffff;
        m = bits > m ? bits : m;
    }
    float f;
    memcpy(&f, &m, sizeof f);
    return f;
}

/* One block's extremes (keys) and its largest |second difference| from its samples alone,
 * over the centres block_scan16 covers: at - 1 .. at + len - 2, from 1 in the call's first
 * block (the same float32 operations; a max is exact in any order). The scan's blocks that it
 * does not measure itself (the call's first, a partial last one) and the detail pass's points
 * outside its runs (wf_block_stat) are measured so. */
static AI void measure_block(const void *base, Py_ssize_t at, Py_ssize_t len, enum kind k,
                             int32_t *hi, int32_t *lo, float *curve) {
    key_extremes(base, at, len, k, hi, lo);
    if (at == 0) {
        *curve = len > 2 ? (float)raw_curve(base, 1, len - 1, k) : 0.0f;
    } else {
        *curve = (float)raw_curve(base, at - 1, at + len - 1, k);
    }
}

/* A block measured in one pass (AVX-512; see most_beat), its curvature while its samples are
 * in the nearest cache: the largest and smallest key of
 * x[at..at+256) (at >= 16) and the largest |second difference| centred on x[at-1..at+254],
 * computed as raw_curve computes it (the same float32 operations: the sum of the outer two,
 * then minus twice the middle one, exact), each sample converted once and its neighbours
 * shifted in from the vector before. Block b's windows reach the centres before at - 1
 * through block b - 1's scan. */
#ifdef WF_X86_SIMD
#define SCAN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
/* x[at..at+16) as 32-bit lanes (int16 sign-extended). */
SCAN_TARGET static AI __m512i load16(const void *base, Py_ssize_t at, enum kind k) {
    if (k == KIND_INT16) {
        return _mm512_cvtepi16_epi32(
            _mm256_loadu_si256((const void *)((const raw16 *)base + at)));
    }
    return _mm512_loadu_si512((const void *)((const raw32 *)base + at));
}

SCAN_TARGET static AI void block_scan16(const void *base, Py_ssize_t at, enum kind k,
                                        int32_t *hi, int32_t *lo, float *curve) {
    __m512i smax = _mm512_set1_epi32(INT32_MIN), smin = _mm512_set1_epi32(INT32_MAX);
    __m512i umax = _mm512_setzero_si512();
    __m512 m = _mm512_setzero_ps(), two = _mm512_set1_ps(-2.0f);
    __m512i pi = load16(base, at - 16, k);
    __m512 prev = k == KIND_FLOAT32 ? _mm512_castsi512_ps(pi) : _mm512_cvtepi32_ps(pi);
    for (int v = 0; v < BLOCK / 16; v++) {
        __m512i xi = load16(base, at + 16 * v, k);
        smax = _mm512_max_epi32(smax, xi);
        smin = _mm512_min_epi32(smin, xi);
        if (k == KIND_FLOAT32) {
            umax = _mm512_max_epu32(umax, xi);
        }
        __m512 cur = k == KIND_FLOAT32 ? _mm512_castsi512_ps(xi) : _mm512_cvtepi32_ps(xi);
        __m512 back1 = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 15));
        __m512 back2 = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 14));
        __m512 d = _mm512_fmadd_ps(two, back1, _mm512_add_ps(back2, cur));
        m = _mm512_max_ps(m, _mm512_abs_ps(d));
        prev = cur;
    }
    int32_t sh = _mm512_reduce_max_epi32(smax), sl = _mm512_reduce_min_epi32(smin);
    *curve = _mm512_reduce_max_ps(m);
    if (k != KIND_FLOAT32) {
        *hi = sh;
        *lo = sl;
    } else { /* as key_extremes */
        uint32_t uh = _mm512_reduce_max_epu32(umax);
        int32_t h = sh >= 0 ? sh : sl, l = uh >= 0x80000000u ? (int32_t)uh : sl;
        *hi = float_key(h);
        *lo = float_key(l);
    }
}

/* Blocks from..to of the region at r (not inlined: the AVX-512 code is called from the
 * kernels of every width, where it is dead for all but the AVX-512 ones). */
#define DEFINE_SCAN_BLOCKS(name, kind)                                                     \
    SCAN_TARGET __attribute__((noinline)) static void name(                                \
        const void *base, Py_ssize_t r, Py_ssize_t from, Py_ssize_t to, int32_t *hi,       \
        int32_t *lo, float *curve) {                                                       \
        for (Py_ssize_t b = from; b < to; b++) {                                           \
            block_scan16(base, r + b * BLOCK, kind, &hi[b], &lo[b], &curve[b]);            \
        }                                                                                  \
    }
DEFINE_SCAN_BLOCKS(scan_blocks16, KIND_INT16)
DEFINE_SCAN_BLOCKS(scan_blocks32, KIND_INT32)
DEFINE_SCAN_BLOCKS(scan_blocksf, KIND_FLOAT32)
#define HAVE_SCAN16 1
#endif

/* What the core reads: the call's samples and the `taps` converted samples before them. */
struct source {
    const void *base;
    Py_ssize_t n;
    const float *history; /* taps floats, oldest first: history[taps - 1] is sample -1 */
    double inv;
    /* Every block's stats (wf_block_stat), computed by the detail pass; NULL: none. */
    const struct wf_block_stat *stats;
};

/* x[-taps..len) = the converted samples at start - taps .. start + len (history before 0). */
static AI void window(const struct source *s, Py_ssize_t start, Py_ssize_t len, enum kind k,
                      int taps, double *x) {
    Py_ssize_t i = -taps;
    for (; i < 0 && start + i < 0; i++) {
        x[i] = s->history[taps + start + i];
    }
    for (; i < len; i++) {
        x[i] = unit_of(key_at(s->base, start + i, k), k, s->inv);
    }
}

static AI double history_hi(const struct source *s, int taps, double *lo) {
    double h = s->history[0], l = h;
    for (int i = 1; i < taps; i++) {
        h = wider_hi(s->history[i], h);
        l = wider_lo(s->history[i], l);
    }
    *lo = l;
    return h;
}

/* The index of the highest bound (the first of equals): what is measured first, so the peak
 * it gives lets the other bounds rule out as much as they can. */
static AI Py_ssize_t most_promising(const double *bound, Py_ssize_t n) {
    Py_ssize_t best = 0;
    for (Py_ssize_t j = 1; j < n; j++) {
        best = bound[j] > bound[best] ? j : best;
    }
    return best;
}

/* What turn `turn` (-1 .. n - 1) of a "most promising first" walk measures: `best` at turn
 * -1, then every other index in order; -1 for best's own turn and for an index whose bound
 * the peak already reaches (a NaN bound never is: it is measured). */
static AI Py_ssize_t turn_index(Py_ssize_t turn, Py_ssize_t best, const double *bound,
                                double peak) {
    Py_ssize_t j = turn < 0 ? best : turn;
    return (turn >= 0 && j == best) || bound[j] <= peak ? -1 : j;
}

/* The interpolated peak of the converted samples x[0..len) (x[-taps..-1] before them): the
 * chunk with the highest bound first, then every other chunk whose bound beats the peak. */
static AI double interpolate(const double *x, Py_ssize_t len, const double *bound,
                             const struct interpolator *ip, double peak, const int taps,
                             const int phases, const int lanes) {
    Py_ssize_t chunks = (len + CHUNK - 1) / CHUNK, best = most_promising(bound, chunks);
    for (Py_ssize_t kk = -1; kk < chunks; kk++) {
        Py_ssize_t j = turn_index(kk, best, bound, peak);
        if (j < 0) {
            continue;
        }
        const double *c = x + j * CHUNK;
        double m;
        if ((j + 1) * CHUNK <= len) {
            m = lanes == 8   ? chunk_peak8(c, ip, taps, phases)
                : lanes == 4 ? chunk_peak4(c, ip, taps, phases)
                             : chunk_peak2(c, ip, taps, phases);
        } else {
            m = tail_peak(c, len - j * CHUNK, ip, taps, phases);
        }
        double rounded = (double)(float)m;
        peak = rounded > peak ? rounded : peak; /* NaN values never win */
    }
    return peak;
}

/* What bounds a chunk's windows: the extremes of its samples and the largest |second
 * difference| centred on them. */
struct spread {
    double hi, lo, curve;
};

/* Of the 16 converted samples at x (x[-1] and x[16] readable), in vectors of `lanes`. A NaN
 * never wins a comparison: ignored (a window holding it interpolates to NaN, which never
 * wins either); infinities are kept. */
#define DEFINE_SPREAD(lanes)                                                               \
    static AI struct spread spread##lanes(const double *x) {                               \
        vec##lanes h, l, d, sign;                                                          \
        for (int i = 0; i < (lanes); i++) {                                                \
            sign[i] = -0.0;                                                                \
        }                                                                                  \
        memcpy(&h, x, sizeof h);                                                           \
        l = h;                                                                             \
        d = sign - sign;                                                                   \
        for (int v = 0; v < CHUNK / (lanes); v++) {                                        \
            vec##lanes xv, xp, xn;                                                         \
            memcpy(&xv, x + v * (lanes), sizeof xv);                                       \
            memcpy(&xp, x + v * (lanes) - 1, sizeof xp);                                   \
            memcpy(&xn, x + v * (lanes) + 1, sizeof xn);                                   \
            vec##lanes c = xp + xn - (xv + xv);                                            \
            c = (vec##lanes)((mask##lanes)c & ~(mask##lanes)sign);                         \
            mask##lanes more = xv > h, less = xv < l, curvier = c > d;                     \
            h = (vec##lanes)(((mask##lanes)xv & more) | ((mask##lanes)h & ~more));         \
            l = (vec##lanes)(((mask##lanes)xv & less) | ((mask##lanes)l & ~less));         \
            d = (vec##lanes)(((mask##lanes)c & curvier) | ((mask##lanes)d & ~curvier));    \
        }                                                                                  \
        struct spread s = {h[0], l[0], d[0]};                                              \
        for (int i = 1; i < (lanes); i++) {                                                \
            s.hi = h[i] > s.hi ? h[i] : s.hi;                                              \
            s.lo = l[i] < s.lo ? l[i] : s.lo;                                              \
            s.curve = d[i] > s.curve ? d[i] : s.curve;                                     \
        }                                                                                  \
        return s;                                                                          \
    }

DEFINE_SPREAD(2)
DEFINE_SPREAD(4)
DEFINE_SPREAD(8)

/* The same of x[from..to), second differences only where both neighbours lie in
 * x[-taps..to] (x[to] is a copy of x[to - 1]). */
static AI struct spread spread_of(const double *x, Py_ssize_t from, Py_ssize_t to, int taps) {
    struct spread s = {x[from], x[from], 0.0};
    for (Py_ssize_t i = from; i < to; i++) {
        s.hi = x[i] > s.hi ? x[i] : s.hi;
        s.lo = x[i] < s.lo ? x[i] : s.lo;
        if (i > -taps) {
            double c = fabs(x[i - 1] + x[i + 1] - (x[i] + x[i]));
            s.curve = c > s.curve ? c : s.curve;
        }
    }
    return s;
}

/* One block whose bound beats the peak, converted once: each chunk's bound is the tighter of
 * the range bound and the curvature bound over the chunk and the ones its windows reach back
 * into; the chunks whose bound still beats the peak are interpolated. */
static AI double block_peak(const struct source *s, Py_ssize_t start, Py_ssize_t len,
                            const struct interpolator *ip, double peak, enum kind k,
                            const int taps, const int phases, const int lanes) {
    const int reach = taps > CHUNK ? 2 : 1; /* chunks a window reaches back into */
    double xd[MAX_TAPS + BLOCK + 1];
    double *x = xd + MAX_TAPS;
    window(s, start, len, k, taps, x);
    x[len] = x[len - 1];
    struct spread sp[2 + BLOCK / CHUNK];
    Py_ssize_t chunks = (len + CHUNK - 1) / CHUNK, full = len / CHUNK;
    for (int c = -reach; c < 0; c++) {
        Py_ssize_t from = c * CHUNK < -taps ? -taps : c * CHUNK;
        sp[2 + c] = spread_of(x, from, (c + 1) * CHUNK, taps);
    }
    for (Py_ssize_t c = 0; c < chunks; c++) {
        sp[2 + c] = c >= full       ? spread_of(x, c * CHUNK, len, taps)
                    : lanes == 8 ? spread8(x + c * CHUNK)
                    : lanes == 4 ? spread4(x + c * CHUNK)
                                 : spread2(x + c * CHUNK);
    }
    double bound[BLOCK / CHUNK];
    for (Py_ssize_t j = 0; j < chunks; j++) {
        struct spread u = sp[2 + j];
        for (int back = 1; back <= reach; back++) {
            struct spread v = sp[2 + j - back];
            u.hi = wider_hi(v.hi, u.hi);
            u.lo = wider_lo(v.lo, u.lo);
            u.curve = wider_hi(v.curve, u.curve);
        }
        bound[j] = tighter(bound_of(u.hi, u.lo, ip), curved_bound(u.hi, u.lo, u.curve, ip));
    }
    return interpolate(x, len, bound, ip, peak, taps, phases, lanes);
}

#ifdef HAVE_SCAN16
/* A block whose bound beats the peak, in float32 (AVX-512): converted once, its 16 chunks'
 * curvature bounds computed side by side (chunk_bounds), the chunks that beat them interpolated
 * in float32, 16 frames a vector (chunks_f32), and only those whose float32 values come within
 * their error of the peak interpolated in double (chunk_peak8), as before.
 *
 * The error: the interpolator reads x_t = float32(raw * inv) and sums y = sum_t c_t x_t in
 * double. Here x'_t = float32(float32(raw) * float32(inv)): the same value when inv is a power
 * of two (as the meter's scales are), else within 4u |x_t| (u = 2^-24); c'_t = float32(c_t),
 * within u |c_t|; and y' is a chain of float32 multiply-adds, within gamma_n sum_t |c'_t x'_t|
 * of sum_t c'_t x'_t whatever their order (n = taps <= 24, gamma_n = n u / (1 - n u)). With
 * M the largest |x'_t| of the block's windows and G = sum |c_t| (abs_max), |x_t| <= M (1 + 5u)
 * and |y' - y| <= (u + 4u + gamma_24 (1 + u)(1 + 5u)) G M (1 + 5u) < 30u G M; the double sum's
 * own error (< 24 * 2^-53 G M) and float32 underflow, even flushed to zero (under 2^-126 per
 * operation, G < 3), add less than 2^-40 G M + 2^-120. So |y| <= |y'| + E with
 * E = 2^-18 G M + 2^-120 (2^-18 = 64u), and a chunk none of whose |y'| exceeds
 * peak / BOUND_SLACK - E holds no value whose float32 rounding beats the peak (BOUND_SLACK
 * covers the rounding, as for the other bounds). An infinity in y' (overflow) exceeds any
 * threshold and a NaN counts as exceeding it: neither lets a chunk pass unseen. */
#define F32_HEAD 48 /* the 24 samples before the block and the second differences there */

/* x[-F32_HEAD..BLOCK) as float32 (x'), when the block is the call's first x[-taps..-1] from
 * the history and zeros before them; returns whether the history's values are finite. (The
 * block's own are: its region is. The frames before it may hold a NaN or an infinity when they
 * are the history or another region; chunk_bounds lets them through, and the caller takes a
 * NaN largest |x'| for one.) */
SCAN_TARGET static AI int block_f32_window(const struct source *s, Py_ssize_t at, enum kind k,
                                           int taps, float *x) {
    __m512 invf = _mm512_set1_ps((float)s->inv);
    for (int v = at >= F32_HEAD ? -F32_HEAD / 16 : 0; v < BLOCK / 16; v++) {
        __m512i xi = load16(s->base, at + 16 * v, k);
        __m512 xf = k == KIND_FLOAT32 ? _mm512_castsi512_ps(xi) : _mm512_cvtepi32_ps(xi);
        _mm512_storeu_ps(x + 16 * v, _mm512_mul_ps(xf, invf));
    }
    int finite = 1;
    if (at < F32_HEAD) {
        for (int i = -F32_HEAD; i < 0; i++) {
            x[i] = i < -taps    ? 0.0f
                   : at + i < 0 ? s->history[taps + at + i]
                                : (float)unit_of(key_at(s->base, at + i, k), k, s->inv);
            finite = finite && isfinite(x[i]);
        }
    }
    return finite;
}

/* Four levels of folds turn 16 vectors into one whose lane c is the largest lane of the c-th:
 * at level k (groups of g = 8 >> k lanes, in pairs), lane i of a fold is the larger of lanes i
 * and i + g of the group pair it falls in, of a for i < 8, of b for i >= 8 (permutex2var: b's
 * lanes are 16..31). */
static const int32_t fold_index[8][16] __attribute__((aligned(64))) = {
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
    {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
    {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
    {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
    {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
};

SCAN_TARGET static AI __m512 fold_max(__m512 a, __m512 b, int level) {
    __m512i l = _mm512_load_si512(fold_index[2 * level]);
    __m512i h = _mm512_load_si512(fold_index[2 * level + 1]);
    return _mm512_max_ps(_mm512_permutex2var_ps(a, l, b), _mm512_permutex2var_ps(a, h, b));
}

SCAN_TARGET static AI __m512 lanes_max16(__m512 *v) {
#pragma GCC unroll 4
    for (int level = 0, n = 16; level < 4; level++, n /= 2) {
#pragma GCC unroll 8
        for (int i = 0; i < n / 2; i++) {
            v[i] = fold_max(v[2 * i], v[2 * i + 1], level);
        }
    }
    return v[0];
}

/* The chunks of the block whose windows' curvature bound (curvature_terms) beats `thr` (NaN
 * counts), from x'[-F32_HEAD..BLOCK): per chunk the largest |x'| and |second difference| (centres
 * 16c - 1 .. 16c + 14: the windows of chunk c reach centres 16c - taps + 2 .. 16c + 14) over it
 * and the one (4x) or two (2x) chunks before it, lane c for chunk c; also the largest |x'|.
 * The float32 bound B' = pair M + curve D of these is within 25u of the one of the exact
 * values (M, D within 5u M and 30u M of them, pair >= 1, the taps' terms and the multiply-add
 * rounded), so |y| <= B' (1 + 2^-18): the caller's `thr` is the peak / (1 + 2^-18), rounded
 * down. */
SCAN_TARGET static AI unsigned chunk_bounds(const float *x, const struct interpolator *ip,
                                            const int taps, float thr, float *mag) {
    __m512 ax[BLOCK / 16], ad[BLOCK / 16], sign = _mm512_set1_ps(-0.0f);
    __m512 two = _mm512_set1_ps(-2.0f), head_x = _mm512_setzero_ps(), head_d = head_x;
    for (int c = -2; c < BLOCK / 16; c++) {
        __m512 xv = _mm512_loadu_ps(x + 16 * c);
        __m512 d = _mm512_fmadd_ps(two, _mm512_loadu_ps(x + 16 * c - 1),
                                   _mm512_add_ps(_mm512_loadu_ps(x + 16 * c - 2), xv));
        __m512 a = _mm512_andnot_ps(sign, xv);
        d = _mm512_andnot_ps(sign, d);
        if (c >= 0) {
            ax[c] = a;
            ad[c] = d;
        } else { /* chunk c in lane 16 + c */
            __mmask16 lane = (__mmask16)(1u << (16 + c));
            head_x = _mm512_mask_mov_ps(head_x, lane, _mm512_set1_ps(_mm512_reduce_max_ps(a)));
            head_d = _mm512_mask_mov_ps(head_d, lane, _mm512_set1_ps(_mm512_reduce_max_ps(d)));
        }
    }
    __m512 cx = lanes_max16(ax), cd = lanes_max16(ad);
    *mag = _mm512_reduce_max_ps(_mm512_max_ps(cx, head_x));
    __m512 mx = _mm512_max_ps(cx, _mm512_castsi512_ps(_mm512_alignr_epi32(
                                      _mm512_castps_si512(cx), _mm512_castps_si512(head_x), 15)));
    __m512 md = _mm512_max_ps(cd, _mm512_castsi512_ps(_mm512_alignr_epi32(
                                      _mm512_castps_si512(cd), _mm512_castps_si512(head_d), 15)));
    if (taps > CHUNK) {
        mx = _mm512_max_ps(mx, _mm512_castsi512_ps(_mm512_alignr_epi32(
                                   _mm512_castps_si512(cx), _mm512_castps_si512(head_x), 14)));
        md = _mm512_max_ps(md, _mm512_castsi512_ps(_mm512_alignr_epi32(
                                   _mm512_castps_si512(cd), _mm512_castps_si512(head_d), 14)));
    }
    __m512 bound = _mm512_fmadd_ps(_mm512_set1_ps((float)ip->pair_max), mx,
                                   _mm512_mul_ps(_mm512_set1_ps((float)ip->curve_max), md));
    return _mm512_cmp_ps_mask(bound, _mm512_set1_ps(thr), _CMP_NLE_UQ);
}

/* The float32 values of the chunks in `which`: those some |y'| of which is not below `thr`
 * (NaN counts), and each one's largest |y'| (+inf for a NaN). */
SCAN_TARGET static AI unsigned chunks_f32(const float *x, const struct interpolator *ip,
                                          const int taps, const int phases, unsigned which,
                                          float thr, float *cmax) {
    __m512 vthr = _mm512_set1_ps(thr);
    unsigned mask = 0;
    for (; which; which &= which - 1) {
        int c = __builtin_ctz(which);
        const float *xc = x + 16 * c;
        __m512 acc[2 * MAX_PHASES];
        for (int f = 0; f < 2 * phases; f++) {
            acc[f] = _mm512_setzero_ps();
        }
#pragma GCC unroll 24
        for (int t = 0; t < taps; t++) { /* two chains per phase */
            __m512 xv = _mm512_loadu_ps(xc - t);
            for (int f = 0; f < phases; f++) {
                acc[2 * f + (t & 1)] =
                    _mm512_fmadd_ps(_mm512_set1_ps(ip->coeff_f[f][t]), xv, acc[2 * f + (t & 1)]);
            }
        }
        __m512 m = _mm512_setzero_ps();
        __mmask16 over = 0;
        for (int f = 0; f < phases; f++) {
            __m512 a = _mm512_abs_ps(_mm512_add_ps(acc[2 * f], acc[2 * f + 1]));
            over |= _mm512_cmp_ps_mask(a, vthr, _CMP_NLE_UQ);
            m = _mm512_max_ps(m, a);
        }
        if (over) {
            mask |= 1u << c;
            float top = _mm512_reduce_max_ps(m);
            cmax[c] = top == top ? top : INFINITY;
        }
    }
    return mask;
}

/* A float32 threshold not above `thr`. */
static AI float float_below(double thr) {
    float f = (float)thr;
    if ((double)f > thr) {
        f = nextafterf(f, -INFINITY);
    }
    return thr == thr ? f : -INFINITY;
}

#define DEFINE_BLOCK_F32(name, kind, taps, phases)                                          \
    SCAN_TARGET __attribute__((noinline)) static unsigned name(                            \
        const struct source *s, Py_ssize_t at, const struct interpolator *ip, double peak,  \
        float *cmax, double *err) {                                                         \
        float xd[F32_HEAD + BLOCK] __attribute__((aligned(64)));                            \
        float *x = xd + F32_HEAD, mag;                                                      \
        int finite = block_f32_window(s, at, kind, taps, x);                                \
        unsigned which = chunk_bounds(x, ip, taps,                                          \
                                      float_below(peak / BOUND_SLACK / (1.0 + 0x1p-18)), &mag); \
        if (!finite || mag != mag) { /* a NaN before the block: every chunk, in double */  \
            which = (1u << (BLOCK / CHUNK)) - 1;                                            \
            mag = INFINITY;                                                                 \
        }                                                                                   \
        *err = 0x1p-18 * ip->abs_max * mag + 0x1p-120;                                      \
        return which ? chunks_f32(x, ip, taps, phases, which,                               \
                                  float_below(peak / BOUND_SLACK - *err), cmax)             \
                     : 0;                                                                   \
    }
DEFINE_BLOCK_F32(block_f32_16_2x, KIND_INT16, 24, 1)
DEFINE_BLOCK_F32(block_f32_16_4x, KIND_INT16, 12, 3)
DEFINE_BLOCK_F32(block_f32_32_2x, KIND_INT32, 24, 1)
DEFINE_BLOCK_F32(block_f32_32_4x, KIND_INT32, 12, 3)
DEFINE_BLOCK_F32(block_f32_f_2x, KIND_FLOAT32, 24, 1)
DEFINE_BLOCK_F32(block_f32_f_4x, KIND_FLOAT32, 12, 3)
#endif

#ifdef HAVE_SCAN16
/* A whole block through its float32 values (block_f32), then the chunks they let through in
 * double (not inlined: the kernels' own loops stay as they were). */
#define DEFINE_F32_PEAK(name, kind, taps, phases, f32)                                      \
    SCAN_TARGET __attribute__((noinline)) static double name(                              \
        const struct source *s, Py_ssize_t start, const struct interpolator *ip,            \
        double peak) {                                                                      \
        float cmax[BLOCK / CHUNK];                                                          \
        double err;                                                                         \
        unsigned mask = f32(s, start, ip, peak, cmax, &err);                                \
        while (mask) {                                                                      \
            unsigned j = (unsigned)__builtin_ctz(mask);                                     \
            for (unsigned rest = mask & (mask - 1); rest; rest &= rest - 1) {               \
                unsigned i = (unsigned)__builtin_ctz(rest);                                 \
                j = cmax[i] > cmax[j] ? i : j;                                              \
            }                                                                               \
            mask &= ~(1u << j);                                                             \
            if (!((double)cmax[j] > peak / BOUND_SLACK - err)) {                            \
                continue;                                                                   \
            }                                                                               \
            double xd[MAX_TAPS + CHUNK];                                                    \
            double *x = xd + MAX_TAPS;                                                      \
            window(s, start + (Py_ssize_t)j * CHUNK, CHUNK, kind, taps, x);                 \
            double rounded = (double)(float)chunk_peak8(x, ip, taps, phases);               \
            peak = rounded > peak ? rounded : peak;                                         \
        }                                                                                   \
        return peak;                                                                        \
    }
DEFINE_F32_PEAK(f32_peak16_2x, KIND_INT16, 24, 1, block_f32_16_2x)
DEFINE_F32_PEAK(f32_peak16_4x, KIND_INT16, 12, 3, block_f32_16_4x)
DEFINE_F32_PEAK(f32_peak32_2x, KIND_INT32, 24, 1, block_f32_32_2x)
DEFINE_F32_PEAK(f32_peak32_4x, KIND_INT32, 12, 3, block_f32_32_4x)
DEFINE_F32_PEAK(f32_peakf_2x, KIND_FLOAT32, 24, 1, block_f32_f_2x)
DEFINE_F32_PEAK(f32_peakf_4x, KIND_FLOAT32, 12, 3, block_f32_f_4x)
#endif

/* A block whose bound beats the peak: through its float32 values where the AVX-512 kernel
 * runs and the block is whole, else block_peak. */
static AI double block_peak_any(const struct source *s, Py_ssize_t start, Py_ssize_t len,
                                const struct interpolator *ip, double peak, enum kind k,
                                const int taps, const int phases, const int lanes) {
#ifdef HAVE_SCAN16
    if (lanes == 8 && len == BLOCK && s->inv >= 0x1p-60 && s->inv <= 0x1p60) {
        return (k == KIND_INT16   ? (taps == 24 ? f32_peak16_2x : f32_peak16_4x)
                : k == KIND_INT32 ? (taps == 24 ? f32_peak32_2x : f32_peak32_4x)
                                  : (taps == 24 ? f32_peakf_2x : f32_peakf_4x))(s, start, ip,
                                                                                 peak);
    }
#endif
    return block_peak(s, start, len, ip, peak, k, taps, phases, lanes);
}

/* A region holding a NaN or an infinity: every chunk interpolated, NaN values and NaN samples
 * ignored (what a full evaluation gives when NaN never wins a comparison). */
static AI double region_in_full(const struct source *s, Py_ssize_t start, Py_ssize_t len,
                                const struct interpolator *ip, double peak, enum kind k,
                                const int taps, const int phases, const int lanes) {
    double xd[MAX_TAPS + BLOCK];
    double *x = xd + MAX_TAPS;
    double always[BLOCK / CHUNK];
    for (int j = 0; j < BLOCK / CHUNK; j++) {
        always[j] = INFINITY;
    }
    for (Py_ssize_t at = start; at < start + len; at += BLOCK) {
        Py_ssize_t m = start + len - at < BLOCK ? start + len - at : BLOCK;
        window(s, at, m, k, taps, x);
        for (Py_ssize_t i = 0; i < m; i++) {
            double a = fabs(x[i]);
            peak = a > peak ? a : peak;
        }
        if (phases) {
            peak = interpolate(x, m, always, ip, peak, taps, phases, lanes);
        }
    }
    return peak;
}

#ifdef HAVE_SCAN16
/* Whether many of a region's blocks are likely to beat their range bound, judged from every
 * 16th block's own extremes against the peak so far and the sample peak among them: then
 * measuring every block's curvature in the pass that finds its extremes (block_scan16) costs
 * less than measuring the blocks that beat it one by one (raw_curve, from the slower caches).
 * Measured break-even: a third of the blocks at 2x, two thirds at 4x (whose range bound
 * rules out more). Either way the bounds hold and the result is the same. */
static AI int most_beat(const void *base, Py_ssize_t r, Py_ssize_t full, enum kind k,
                        double inv, const struct interpolator *ip, double peak, int taps) {
    double bound[REGION_BLOCKS / 16];
    Py_ssize_t seen = 0, beat = 0;
    for (Py_ssize_t b = 8; b < full; b += 16) {
        int32_t hk, lk;
        key_extremes(base, r + b * BLOCK, BLOCK, k, &hk, &lk);
        double h = unit_of(hk, k, inv), l = unit_of(lk, k, inv);
        peak = h > peak ? h : peak;
        peak = -l > peak ? -l : peak;
        bound[seen++] = bound_of(h, l, ip);
    }
    for (Py_ssize_t i = 0; i < seen; i++) {
        beat += bound[i] > peak;
    }
    return seen > 0 && (taps == 24 ? 3 * beat > seen : 3 * beat > 2 * seen);
}
#endif

/* The peak over a call's contiguous samples, in regions of up to 1024 blocks: first every
 * block's extremes (and so the region's sample peak), then the block with the highest bound,
 * then every other block whose bound beats the peak. */
static AI double contiguous_peak(const struct source *s, const struct interpolator *ip,
                                 double peak, enum kind k, const int taps, const int phases,
                                 const int lanes) {
    int32_t hi[REGION_BLOCKS], lo[REGION_BLOCKS]; /* keys, converted where needed */
    double bound[REGION_BLOCKS];
#ifdef HAVE_SCAN16
    float curve[REGION_BLOCKS]; /* the scan's: the largest |second difference|, raw units */
#endif
    double prev_lo, prev_hi = taps ? history_hi(s, taps, &prev_lo) : 0.0;
    if (!taps) {
        prev_lo = 0.0;
    }
    for (Py_ssize_t r = 0; r < s->n; r += REGION_BLOCKS * BLOCK) {
        Py_ssize_t rn = s->n - r < REGION_BLOCKS * BLOCK ? s->n - r : REGION_BLOCKS * BLOCK;
        Py_ssize_t blocks = (rn + BLOCK - 1) / BLOCK, full = rn / BLOCK;
        int scan = 0, given = 0;
#ifdef HAVE_SCAN16
        if (lanes == 8 && s->stats) { /* what the scan would find, found by the detail pass */
            const struct wf_block_stat *st = s->stats + r / BLOCK;
            for (Py_ssize_t b = 0; b < blocks; b++) {
                hi[b] = st[b].hi;
                lo[b] = st[b].lo;
                curve[b] = st[b].curve;
            }
            given = 1;
            scan = taps != 0; /* every block's both bounds known: rank by the tighter */
        } else if (lanes == 8 && taps) {
            scan = most_beat(s->base, r, full, k, s->inv, ip, peak, taps);
        }
#endif
        if (!given && !scan) {
            for (Py_ssize_t b = 0; b < full; b++) {
                key_extremes(s->base, r + b * BLOCK, BLOCK, k, &hi[b], &lo[b]);
            }
            if (full < blocks) {
                key_extremes(s->base, r + full * BLOCK, rn - full * BLOCK, k, &hi[full],
                             &lo[full]);
            }
        }
#ifdef HAVE_SCAN16
        else if (!given) {
            Py_ssize_t b0 = 0;
            if (r == 0) { /* centres 1..len-2: block 1's windows reach no further back */
                measure_block(s->base, 0, rn < BLOCK ? rn : BLOCK, k, &hi[0], &lo[0], &curve[0]);
                b0 = 1;
            }
            if (k == KIND_INT16) {
                scan_blocks16(s->base, r, b0, full, hi, lo, curve);
            } else if (k == KIND_INT32) {
                scan_blocks32(s->base, r, b0, full, hi, lo, curve);
            } else {
                scan_blocksf(s->base, r, b0, full, hi, lo, curve);
            }
            if (full < blocks && full >= b0) { /* centres at-1..at+len-2, as the scan's */
                measure_block(s->base, r + full * BLOCK, rn - full * BLOCK, k, &hi[full],
                              &lo[full], &curve[full]);
            }
        }
#endif
        int32_t kmax = hi[0], kmin = lo[0];
        for (Py_ssize_t b = 1; b < blocks; b++) {
            kmax = hi[b] > kmax ? hi[b] : kmax;
            kmin = lo[b] < kmin ? lo[b] : kmin;
        }
        /* Float keys above +inf's or below -inf's are NaNs; integers are always finite. */
        int finite = k != KIND_FLOAT32 || (kmax < 0x7f800000 && kmin > (int32_t)0x807fffff);
        double top = wider_hi(unit_of(kmax, k, s->inv), -unit_of(kmin, k, s->inv));
        double last_hi = unit_of(hi[blocks - 1], k, s->inv);
        double last_lo = unit_of(lo[blocks - 1], k, s->inv);
        if (!finite) {
            peak = region_in_full(s, r, rn, ip, peak, k, taps, phases, lanes);
        }
#ifdef HAVE_SCAN16
        else if (scan) {
            /* Block b: the tighter of its range and curvature bounds over blocks b - 1 and b
             * (the region before, or the history without a curvature bound, for the first). */
            peak = top > peak ? top : peak; /* the sample peak */
            double h0 = wider_hi(prev_hi, unit_of(hi[0], k, s->inv));
            double l0 = wider_lo(prev_lo, unit_of(lo[0], k, s->inv));
            /* the call's first block: no curvature bound; a region's first: the 22 centres
             * before it too */
            float before = r == 0 ? INFINITY : (float)raw_curve(s->base, r - taps + 2, r - 1, k);
            double c0 = (double)(curve[0] > before ? curve[0] : before) * s->inv;
            bound[0] = tighter(bound_of(h0, l0, ip), curved_bound(h0, l0, c0, ip));
            for (Py_ssize_t b = 1; b < blocks; b++) {
                int32_t hk = hi[b] > hi[b - 1] ? hi[b] : hi[b - 1];
                int32_t lk = lo[b] < lo[b - 1] ? lo[b] : lo[b - 1];
                double h = unit_of(hk, k, s->inv), l = unit_of(lk, k, s->inv);
                double c = (double)(curve[b] > curve[b - 1] ? curve[b] : curve[b - 1]) * s->inv;
                double range = bound_of(h, l, ip), curved = curved_bound(h, l, c, ip);
                bound[b] = curved < range ? curved : range;
            }
            Py_ssize_t best = most_promising(bound, blocks);
            for (Py_ssize_t kk = -1; kk < blocks; kk++) {
                Py_ssize_t b = turn_index(kk, best, bound, peak);
                if (b < 0) {
                    continue;
                }
                Py_ssize_t at = r + b * BLOCK, len = b < full ? BLOCK : rn - b * BLOCK;
                peak = block_peak_any(s, at, len, ip, peak, k, taps, phases, lanes);
            }
        }
#endif
        else if (phases) {
            peak = top > peak ? top : peak; /* the sample peak */
            /* Block b's windows reach into block b - 1 (the first block's into the history
             * or the region before). Keys order as the converted samples do (unit_of is
             * monotonic), so the extremes are converted after the max and min; in one loop
             * over the blocks GCC vectorises. */
            bound[0] = bound_of(wider_hi(prev_hi, unit_of(hi[0], k, s->inv)),
                                wider_lo(prev_lo, unit_of(lo[0], k, s->inv)), ip);
            for (Py_ssize_t b = 1; b < blocks; b++) {
                int32_t h = hi[b] > hi[b - 1] ? hi[b] : hi[b - 1];
                int32_t l = lo[b] < lo[b - 1] ? lo[b] : lo[b - 1];
                bound[b] = bound_of(unit_of(h, k, s->inv), unit_of(l, k, s->inv), ip);
            }
            Py_ssize_t best = most_promising(bound, blocks);
            for (Py_ssize_t kk = -1; kk < blocks; kk++) {
                Py_ssize_t b = turn_index(kk, best, bound, peak);
                if (b < 0) {
                    continue;
                }
                Py_ssize_t at = r + b * BLOCK, len = b < full ? BLOCK : rn - b * BLOCK;
                if (at >= BLOCK) { /* the block's own curvature bound: its windows' second
                                    * differences are centred in [at - taps + 2, at + len - 1),
                                    * within the 288 (a multiple of the vectors) before that */
                    double h = b ? unit_of(hi[b] > hi[b - 1] ? hi[b] : hi[b - 1], k, s->inv)
                                 : wider_hi(prev_hi, unit_of(hi[0], k, s->inv));
                    double l = b ? unit_of(lo[b] < lo[b - 1] ? lo[b] : lo[b - 1], k, s->inv)
                                 : wider_lo(prev_lo, unit_of(lo[0], k, s->inv));
                    double curve = len == BLOCK
                                       ? raw_curve(s->base, at + BLOCK - 1 - 288, at + BLOCK - 1, k)
                                       : raw_curve(s->base, at - MAX_TAPS, at + len - 1, k);
                    curve *= s->inv;
                    if (curved_bound(h, l, curve, ip) <= peak) {
                        continue;
                    }
                }
                peak = block_peak_any(s, at, len, ip, peak, k, taps, phases, lanes);
            }
        } else {
            peak = top > peak ? top : peak;
        }
        prev_hi = last_hi;
        prev_lo = last_lo;
    }
    return peak;
}

/* One function per sample type, interpolator (4x: 3 phases of 12 taps; 2x: 1 of 24; none) and
 * vector width: 2 doubles everywhere (SSE2, NEON), 4 with AVX2 and FMA, 8 with AVX-512. */
typedef double (*peak_fn)(const struct source *, const struct interpolator *, double);

#define DEFINE_PEAK(name, kind, taps, phases, lanes, target)                               \
    target static double name(const struct source *s, const struct interpolator *ip,       \
                              double peak) {                                               \
        return contiguous_peak(s, ip, peak, kind, taps, phases, lanes);                    \
    }
#define DEFINE_PEAKS(sfx, lanes, target)                                                   \
    DEFINE_PEAK(peak16_4x_##sfx, KIND_INT16, 12, 3, lanes, target)                         \
    DEFINE_PEAK(peak16_2x_##sfx, KIND_INT16, 24, 1, lanes, target)                         \
    DEFINE_PEAK(peak16_1x_##sfx, KIND_INT16, 0, 0, lanes, target)                          \
    DEFINE_PEAK(peak32_4x_##sfx, KIND_INT32, 12, 3, lanes, target)                         \
    DEFINE_PEAK(peak32_2x_##sfx, KIND_INT32, 24, 1, lanes, target)                         \
    DEFINE_PEAK(peak32_1x_##sfx, KIND_INT32, 0, 0, lanes, target)                          \
    DEFINE_PEAK(peakf_4x_##sfx, KIND_FLOAT32, 12, 3, lanes, target)                        \
    DEFINE_PEAK(peakf_2x_##sfx, KIND_FLOAT32, 24, 1, lanes, target)                        \
    DEFINE_PEAK(peakf_1x_##sfx, KIND_FLOAT32, 0, 0, lanes, target)                         \
    static const peak_fn peaks_##sfx[3][3] = {                                             \
        {peak16_1x_##sfx, peak16_2x_##sfx, peak16_4x_##sfx},                               \
        {peak32_1x_##sfx, peak32_2x_##sfx, peak32_4x_##sfx},                               \
        {peakf_1x_##sfx, peakf_2x_##sfx, peakf_4x_##sfx},                                  \
    };

DEFINE_PEAKS(2, 2, )
#ifdef WF_X86_SIMD
#define X86_KERNELS 1
DEFINE_PEAKS(4, 4, __attribute__((target("avx2,fma"))))
DEFINE_PEAKS(8, 8, __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))))
#endif

/* Whether this CPU runs the AVX-512 kernels (8 lanes): the ones that read block stats. */
int wf_block_stats_available(void) {
#ifdef X86_KERNELS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* As contiguous_peak finds them (measure_block). */
void wf_block_stat(const void *base, Py_ssize_t at, Py_ssize_t len, enum kind k,
                   struct wf_block_stat *out) {
    measure_block(base, at, len, k, &out->hi, &out->lo, &out->curve);
}

const char wf_peak_stats_available_doc[] =
"peak_stats_available() -> bool\n\n"
"Whether detail_minmax computes the true peak's block stats on this CPU and true_peak reads\n"
"them (the AVX-512 kernels).";

PyObject *wf_peak_stats_available(PyObject *self, PyObject *args) {
    return PyBool_FromLong(wf_block_stats_available());
}

/* The widest kernel this CPU runs for the sample type and interpolator (0, 1 or 3 phases). */
static peak_fn peak_kernel(enum kind k, int phases) {
    int row = k == KIND_INT16 ? 0 : k == KIND_INT32 ? 1 : 2, col = phases == 3 ? 2 : phases;
#ifdef X86_KERNELS
    if (wf_block_stats_available()) {
        return peaks_8[row][col];
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return peaks_4[row][col];
    }
#endif
    return peaks_2[row][col];
}

/* The history after the call: its newest `taps` samples, converted, oldest first. */
static void update_history(const struct source *s, enum kind k, int taps, float *history) {
    Py_ssize_t keep = taps - s->n > 0 ? taps - s->n : 0;
    memmove(history, history + taps - keep, (size_t)keep * sizeof(float));
    for (Py_ssize_t i = keep; i < taps; i++) {
        history[i] = (float)unit_of(key_at(s->base, s->n - taps + i, k), k, s->inv);
    }
}

const char wf_true_peak_doc[] =
"true_peak(samples, inv_scale, taps, history, peak) -> peak\n\n"
"The larger of `peak` and the largest |sample| and |interpolated value| of the 1-D\n"
"`samples` (each times `inv_scale`, as float32). `taps`: interpolator_taps(rate) (empty: the\n"
"sample peak only); `history`: float32, the taps - 1 samples before these (updated).\n"
"`stats` (optional): the samples' block stats as detail_minmax computed them (a C-contiguous\n"
"(ceil(n / 256), 3) int32 buffer, or None); read instead of the samples where they help,\n"
"with the same result.";

PyObject *wf_true_peak(PyObject *self, PyObject *args) {
    PyObject *samples_o, *taps_o, *history_o, *stats_o = Py_None;
    double inv, peak;
    if (!PyArg_ParseTuple(args, "OdOOd|O", &samples_o, &inv, &taps_o, &history_o, &peak,
                          &stats_o)) {
        return NULL;
    }
    struct interpolator ip;
    if (read_taps(taps_o, &ip) < 0) {
        return NULL;
    }
    Py_buffer sv, hv;
    enum kind k;
    if (wf_get_channel(samples_o, &sv, &k) < 0) {
        return NULL;
    }
    int hist = ip.taps; /* one more than the window needs: the layout the meter keeps */
    if (wf_get_out(history_o, &hv, 4, hist, "history") < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = sv.shape[0], s0 = sv.strides[0], size = sv.itemsize;
    int contiguous = s0 == size;
    Py_buffer tv = {0};
    const struct wf_block_stat *stats = NULL;
    if (stats_o != Py_None) {
        Py_ssize_t need = (n + BLOCK - 1) / BLOCK * (Py_ssize_t)sizeof(struct wf_block_stat);
        if (PyObject_GetBuffer(stats_o, &tv, PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&hv);
            PyBuffer_Release(&sv);
            return NULL;
        }
        if (tv.len < need) {
            PyErr_Format(PyExc_ValueError, "stats: need %zd bytes", need);
            PyBuffer_Release(&tv);
            PyBuffer_Release(&hv);
            PyBuffer_Release(&sv);
            return NULL;
        }
        stats = contiguous ? tv.buf : NULL; /* strided samples go piece by piece: unused */
    }
    char *copy = NULL;
    if (!contiguous && n > 0) {
        copy = malloc((size_t)(n < PIECE ? n : PIECE) * (size_t)size);
        if (!copy) {
            PyBuffer_Release(&tv);
            PyBuffer_Release(&hv);
            PyBuffer_Release(&sv);
            return PyErr_NoMemory();
        }
    }
    float *history = hv.buf;
    peak_fn kernel = peak_kernel(k, ip.phases);
    Py_BEGIN_ALLOW_THREADS
    /* Strided samples are copied to contiguous memory a piece at a time, each piece a call of
     * its own (the history carries over). */
    Py_ssize_t step = contiguous ? (n > 0 ? n : 1) : PIECE;
    for (Py_ssize_t at = 0; at < n; at += step) {
        Py_ssize_t len = n - at < step ? n - at : step;
        const char *from = (const char *)sv.buf + at * s0;
        if (copy) {
            for (Py_ssize_t i = 0; i < len; i++) {
                memcpy(copy + i * size, from + i * s0, (size_t)size);
            }
            from = copy;
        }
        struct source s = {from, len, history, inv, stats};
        if (peak != INFINITY) { /* else nothing can change but the history (priming) */
            peak = kernel(&s, &ip, peak);
        }
        update_history(&s, k, hist, history);
    }
    Py_END_ALLOW_THREADS
    free(copy);
    if (stats_o != Py_None) {
        PyBuffer_Release(&tv);
    }
    PyBuffer_Release(&hv);
    PyBuffer_Release(&sv);
    return PyFloat_FromDouble(peak);
}
